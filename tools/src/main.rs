//! `tools`: the cxr command line. Errors are reported at this edge with `anyhow`.

mod bench;
mod data;
mod eval;
mod gradcam;
mod images;
mod info;
mod predict;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// cxr: train, evaluate and explain chest X-ray classifiers with a from-scratch Rust runtime.
#[derive(Parser)]
#[command(name = "tools", version, about, long_about = None)]
struct Cli {
    /// Worker threads for the CPU kernels (default: RAYON_NUM_THREADS or all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure kernel throughput (GEMM, ResNet18 convolutions) and print a table or JSON lines.
    Bench(bench::BenchArgs),
    /// Train a classifier (the main job): data, split, model, optimizer, validation, checkpoints.
    Train(Box<train::TrainArgs>),
    /// Evaluate a checkpoint on a data split: AUROC with CIs, AP, thresholds, ROC and confusion figures.
    Eval(Box<eval::EvalArgs>),
    /// Inspect a data source: label statistics (`stats`) and image integrity (`check`).
    Data(data::DataArgs),
    /// Show the tensors, dtypes, shapes, parameter count and metadata of a weight file.
    Info(info::InfoArgs),
    /// Classify X-rays: every finding's probability, those above threshold marked.
    Predict(predict::PredictArgs),
    /// Grad-CAM / Grad-CAM++ / HiResCAM heatmaps, panels and localisation against boxes.
    Gradcam(Box<gradcam::GradcamArgs>),
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Keeps memory that large tensors free in the process for the next ones (as PyTorch's caching
/// allocator does), instead of glibc giving every large block back to the kernel and faulting in
/// fresh zeroed pages for the next: a training step allocates and frees the same activation
/// sizes every time, and at batch 32 those page faults cost ResNet18 15-20% of its step time.
fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tuning parameters; it is called before any
        // other thread exists, and a rejected value leaves the defaults in place.
        unsafe {
            // Large blocks from the heap, not from their own mappings (whose size threshold
            // glibc caps at 32 MB, below a batch's activations) ...
            libc::mallopt(libc::M_MMAP_MAX, 0);
            // ... and freed heap memory kept rather than trimmed.
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    retain_freed_memory();
    if let Some(threads) = cli.threads {
        cxr::set_num_threads(threads)?;
    }
    match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Data(args) => data::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Info(args) => info::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Gradcam(args) => gradcam::run(&args),
    }
}
