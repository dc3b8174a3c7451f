//! `tools info FILE`: what a weight file or checkpoint holds.

use anyhow::Result;
use clap::Args;
use cxr::io::{checkpoint::read_meta, WeightFile};
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// A safetensors weight file or cxr checkpoint.
    file: PathBuf,
    /// Print only the summary and metadata, not every tensor.
    #[arg(long)]
    brief: bool,
}

/// True for tensors that are state, not learned parameters.
fn is_buffer(name: &str) -> bool {
    ["running_mean", "running_var", "num_batches_tracked"].iter().any(|b| name.ends_with(b))
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let file = WeightFile::open(&args.file)?;
    let entries = file.entries();
    let params: usize = entries.iter().filter(|e| !is_buffer(&e.name)).map(|e| e.numel()).sum();
    let bytes: usize = entries.iter().map(|e| e.byte_len()).sum();
    let mut dtypes: Vec<&str> = entries.iter().map(|e| e.dtype.as_str()).collect();
    dtypes.sort();
    dtypes.dedup();
    println!("file:        {}", args.file.display());
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
    if !args.brief {
        let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(4).max(4);
        println!("\n{:<width$}  {:<5}  shape", "name", "dtype");
        for e in entries {
            println!("{:<width$}  {:<5}  {:?}", e.name, e.dtype, e.shape);
        }
    }
    Ok(())
}
