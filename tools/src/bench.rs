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
    /// Which groups to run: gemm, conv, small-conv, densenet-conv, model, train, data (default:
    /// gemm, conv). `conv` is ResNet18's convolutions at each --batch; `small-conv` those of
    /// ResNet18 with the MedMNIST stem at 28x28, batch 128 (the 28px training target);
    /// `densenet-conv` DenseNet121's at batch 16 (its training target); `train` times the training targets: an MLP epoch, ResNet18 and
    /// DenseNet121 steps (images per call in the name); `data` the decode + augment pipeline
    /// alone on the images of --data-dir.
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
    /// Image folder (with an `images/` subfolder of PNGs) for the data group.
    #[arg(long, default_value = "../shared/data/nih256")]
    data_dir: std::path::PathBuf,
    /// Only the training cases, and the convolution layers of the conv groups, whose name contains
    /// one of these (e.g. `mlp`, `resnet18.b32`, `layer4`); a conv group's total then sums those.
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Short runs (a smoke test, not a measurement).
    #[arg(long)]
    quick: bool,
    /// Device to measure: cpu (the groups above) or cuda / cuda:N (GEMM TFLOP/s and ResNet18
    /// training images/s at --train-batch, default 128, 224x224).
    #[arg(long, default_value = "cpu")]
    device: cxr::Device,
}

/// The batch of the `densenet-conv` group: DenseNet121's training target.
const DENSENET_CONV_BATCH: usize = 16;
/// The batch of the `small-conv` group: the 28x28 ResNet18 training target.
const SMALL_CONV_BATCH: usize = 128;

pub fn run(args: &BenchArgs) -> Result<()> {
    for group in &args.only {
        if !["gemm", "conv", "small-conv", "densenet-conv", "model", "train", "data"].contains(&group.as_str()) {
            bail!("unknown benchmark group '{group}' (expected gemm, conv, small-conv, densenet-conv, model, train or data)");
        }
    }
    let budget = if args.quick { Budget::quick() } else { Budget::standard() };
    if args.device != cxr::Device::Cpu {
        return run_device(args, budget);
    }
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
            emit(bench::conv_benches(batch, budget, &args.cases));
        }
    }
    if args.only.iter().any(|g| g == "small-conv") {
        emit(bench::small_conv_benches(SMALL_CONV_BATCH, budget, &args.cases));
    }
    if args.only.iter().any(|g| g == "densenet-conv") {
        emit(bench::densenet_conv_benches(DENSENET_CONV_BATCH, budget, &args.cases));
    }
    if args.only.iter().any(|g| g == "model") {
        let archs = args.models.iter().map(|m| cxr::models::Architecture::parse(m)).collect::<cxr::Result<Vec<_>>>()?;
        emit(bench::model_benches(&archs, args.train_batch, budget));
    }
    if args.only.iter().any(|g| g == "train") {
        emit(bench::training_benches(budget, &args.cases));
    }
    if args.only.iter().any(|g| g == "data") {
        emit(bench::data_benches(&args.data_dir, budget)?);
    }
    Ok(())
}

/// The CUDA benchmarks: GEMM throughput and ResNet18 training images/s on the device.
fn run_device(args: &BenchArgs, budget: Budget) -> Result<()> {
    let device = args.device;
    // Resolve the device first, so a machine without a driver, NVRTC or GPU gets one clear line.
    device.backend()?;
    println!("cxr bench on {device}");
    if args.only.iter().any(|g| g == "gemm") {
        for m in bench::device_gemm_benches(device, &args.gemm_sizes, budget)? {
            println!("{:<32} {:>10.3} ms  {:>8.2} TFLOP/s", m.name, m.median_ms, m.gflops().unwrap_or(0.0) / 1e3);
        }
    }
    if args.only.iter().any(|g| g == "model") {
        let batch = if args.train_batch == 0 { 128 } else { args.train_batch };
        let m = bench::device_train_bench(device, batch, 224, budget)?;
        println!("{:<32} {:>10.3} ms  {:>8.1} images/s", m.name, m.median_ms, batch as f64 / (m.median_ms / 1e3));
    }
    Ok(())
}
