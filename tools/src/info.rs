//! `tools info FILE`: what a weight file or checkpoint holds; `tools info --devices`: the devices
//! cxr can compute on.

use anyhow::{bail, Result};
use clap::Args;
use cxr::io::{checkpoint::read_meta, WeightFile};
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// A safetensors weight file or cxr checkpoint.
    file: Option<PathBuf>,
    /// List the compute devices: the CPU (threads, SIMD level) and every CUDA GPU, or why CUDA
    /// cannot be used (no driver, no NVRTC, no GPU).
    #[arg(long)]
    devices: bool,
    /// Print only the summary and metadata, not every tensor.
    #[arg(long)]
    brief: bool,
}

/// True for tensors that are state, not learned parameters.
fn is_buffer(name: &str) -> bool {
    ["running_mean", "running_var", "num_batches_tracked"].iter().any(|b| name.ends_with(b))
}

pub fn run(args: &InfoArgs) -> Result<()> {
    if args.devices {
        print_devices();
    }
    match &args.file {
        Some(file) => print_file(file, args.brief),
        None if args.devices => Ok(()),
        None => bail!("give a weight file or checkpoint to inspect, or --devices"),
    }
}

fn print_devices() {
    let simd = cxr::backend::cpu::simd::SimdLevel::current().name();
    println!("cpu: {} threads, SIMD level {simd}", cxr::num_threads());
    for line in cxr::backend::cuda::gpu::device_report() {
        println!("{line}");
    }
}

fn print_file(path: &std::path::Path, brief: bool) -> Result<()> {
    let file = WeightFile::open(path)?;
    let entries = file.entries();
    let params: usize = entries.iter().filter(|e| !is_buffer(&e.name)).map(|e| e.numel()).sum();
    let bytes: usize = entries.iter().map(|e| e.byte_len()).sum();
    let mut dtypes: Vec<&str> = entries.iter().map(|e| e.dtype.as_str()).collect();
    dtypes.sort();
    dtypes.dedup();
    println!("file:        {}", path.display());
    println!("tensors:     {} ({} bytes of data, dtypes {})", entries.len(), bytes, dtypes.join(", "));
    println!("parameters:  {params}");
    match read_meta(&file) {
        Ok(meta) => {
            println!("metadata:");
            if let serde_json::Value::Object(fields) = serde_json::to_value(&meta)? {
                fields.iter().filter(|(_, v)| !v.is_null()).for_each(|(k, v)| println!("  {k}: {v}"));
            }
        }
        Err(_) if file.metadata().is_empty() => println!("metadata:    none (a plain weight file)"),
        Err(_) => {
            println!("metadata:");
            file.metadata().iter().for_each(|(k, v)| println!("  {k}: {v}"));
        }
    }
    if !brief {
        let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(4).max(4);
        println!("\n{:<width$}  {:<5}  shape", "name", "dtype");
        for e in entries {
            println!("{:<width$}  {:<5}  {:?}", e.name, e.dtype, e.shape);
        }
    }
    Ok(())
}
