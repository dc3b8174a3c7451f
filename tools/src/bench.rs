//! `tools bench`: runs the library's benchmarks and prints a table, or one JSON object per line.

use anyhow::{bail, Result};
use clap::Args;
use cxr::backend::cpu::simd::SimdLevel;
use cxr::bench::{self, Budget, Measurement};

#[derive(Args)]
pub struct BenchArgs {
    /// Print one JSON object per line (name, threads, median, min, max, unit, gflops).
    #[arg(long)]
    json: bool,
    /// Which groups to run: gemm, conv, model (default: gemm, conv).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["gemm".to_string(), "conv".to_string()])]
    only: Vec<String>,
    /// GEMM sizes (n for n x n x n).
    #[arg(long, value_delimiter = ',', default_values_t = vec![256, 1024, 2048])]
    gemm_sizes: Vec<usize>,
    /// Batch sizes for the ResNet18 convolution shapes.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 32])]
    batch: Vec<usize>,
    /// Architectures for the model group.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["resnet18".to_string(), "densenet121".to_string()])]
    models: Vec<String>,
    /// Batch of the model group's training step (0: inference only).
    #[arg(long, default_value_t = 0)]
    train_batch: usize,
    /// Short runs (a smoke test, not a measurement).
    #[arg(long)]
    quick: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    for group in &args.only {
        if !["gemm", "conv", "model"].contains(&group.as_str()) {
            bail!("unknown benchmark group '{group}' (expected gemm, conv or model)");
        }
    }
    let budget = if args.quick { Budget::quick() } else { Budget::standard() };
    if !args.json {
        println!("cxr bench: {} threads, SIMD level {}", cxr::num_threads(), SimdLevel::current().name());
    }
    let emit = |rows: Vec<Measurement>| {
        if args.json {
            rows.iter().for_each(|m| println!("{}", m.to_json()));
        } else {
            print!("{}", bench::format_table(&rows));
        }
    };
    if args.only.iter().any(|g| g == "gemm") {
        emit(bench::gemm_benches(&args.gemm_sizes, budget));
    }
    if args.only.iter().any(|g| g == "conv") {
        for &batch in &args.batch {
            emit(bench::conv_benches(batch, budget));
        }
    }
    if args.only.iter().any(|g| g == "model") {
        let archs = args.models.iter().map(|m| cxr::models::Architecture::parse(m)).collect::<cxr::Result<Vec<_>>>()?;
        emit(bench::model_benches(&archs, args.train_batch, budget));
    }
    Ok(())
}
