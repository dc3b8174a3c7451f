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

fn run(cli: Cli) -> Result<()> {
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
