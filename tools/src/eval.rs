//! `tools eval`: evaluate a checkpoint on a data split. Prints the per-finding table and writes
//! metrics.json, per_class.csv, roc.png and confusion.png; optionally stores the split's Youden
//! thresholds in the checkpoint for prediction.

use anyhow::{bail, Context, Result};
use clap::Args;
use cxr::eval::{check_labels, data_label_names, open_eval_data, predict_dataset, training_config, PredictOptions};
use cxr::io::{load_checkpoint, load_model, update_meta};
use cxr::metrics::report::youden_thresholds;
use cxr::metrics::{evaluate, BootstrapOptions, EvalInput, EvalReport, ThresholdChoice};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate (a cxr checkpoint, e.g. runs/run/best.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data: any source `tools train` accepts (`phantom[:COUNT[:SIZE]]`, an .npz, an NIH folder, a
    /// CSV or a folder with labels.csv, `chestmnist`).
    #[arg(long)]
    data: String,
    /// Which images: test, val, train or all. The data is split exactly as the checkpoint's
    /// training run split it (the seed, fractions and view filter stored in the checkpoint;
    /// official splits for .npz and NIH lists), so `test` is the patients training held out.
    #[arg(long, default_value = "test")]
    split: String,
    /// Output folder (default: eval-SPLIT next to the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Decision thresholds for precision/recall/F1/confusion: a probability in (0, 1), a comma
    /// list of one per finding, `youden` (each finding's Youden J threshold on this split, which
    /// is optimistic on it), or `checkpoint` (thresholds stored by --write-thresholds). An image
    /// is positive when its probability is >= the threshold.
    #[arg(long, default_value = "0.5")]
    threshold: String,
    /// Bootstrap resamples for the 95% confidence intervals (0: no intervals). Patients are
    /// resampled when the data has patient ids, images otherwise.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Store this split's per-finding Youden thresholds in the checkpoint's metadata (weights
    /// untouched), for `tools predict`. Choose them on `val` to keep `test` unbiased.
    #[arg(long)]
    write_thresholds: bool,
    /// Images per forward pass (default: the training batch size, or 32).
    #[arg(long)]
    batch_size: Option<usize>,
    /// On-disk cache of resized images (as `tools train --cache-dir`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

fn threshold_choice(
    text: &str,
    stored: Option<&Vec<f32>>,
    names: &[String],
    checkpoint: &Path,
) -> Result<ThresholdChoice> {
    if !text.trim().eq_ignore_ascii_case("checkpoint") {
        return Ok(ThresholdChoice::parse(text, names.len())?);
    }
    let Some(stored) = stored else {
        bail!(
            "{}: the checkpoint has no thresholds (store some with `tools eval --split val --write-thresholds`)",
            checkpoint.display()
        );
    };
    if stored.len() != names.len() {
        bail!(
            "{}: the checkpoint stores {} thresholds for {} findings",
            checkpoint.display(),
            stored.len(),
            names.len()
        );
    }
    Ok(ThresholdChoice::PerClass(stored.iter().map(|&t| t as f64).collect()))
}

fn write_outputs(out: &Path, report: &EvalReport) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json = serde_json::to_string_pretty(report).context("cannot encode metrics.json")?;
    cxr::io::atomic::write_atomic(&out.join("metrics.json"), json.as_bytes())?;
    cxr::io::atomic::write_atomic(&out.join("per_class.csv"), report.per_class_csv().as_bytes())?;
    cxr::plot::roc_grid(&out.join("roc.png"), &report.classes)?;
    cxr::plot::confusion_grid(&out.join("confusion.png"), &report.classes)?;
    Ok(())
}

/// Stores `thresholds` in the checkpoint and reads them back.
fn store_thresholds(checkpoint: &Path, thresholds: &[f64]) -> Result<()> {
    let values: Vec<f32> = thresholds.iter().map(|&t| t as f32).collect();
    update_meta(checkpoint, |meta| meta.thresholds = Some(values.clone()))?;
    let (_, meta) = load_checkpoint(checkpoint)?;
    if meta.thresholds.as_ref() != Some(&values) {
        bail!("{}: thresholds did not read back as written", checkpoint.display());
    }
    Ok(())
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let started = Instant::now();
    let loaded = load_model(&args.checkpoint, cxr::Device::Cpu)?;
    let names = loaded.meta.label_names(&args.checkpoint)?;
    let preprocess = loaded.meta.preprocess(&args.checkpoint)?;
    let choice = threshold_choice(&args.threshold, loaded.meta.thresholds.as_ref(), &names, &args.checkpoint)?;
    let (source, options) = open_eval_data(&args.data, &loaded.meta)?;
    let dataset = source.part(&args.split)?;
    if dataset.is_empty() {
        bail!("{}: the {} split is empty ({})", args.data, args.split, source.description);
    }
    check_labels(&args.checkpoint, &names, &data_label_names(dataset.labels(0).len()))?;
    let config = training_config(&loaded.meta);
    eprintln!("model: {} from {}", loaded.architecture, args.checkpoint.display());
    eprintln!(
        "data: {} -> {} split: {} images (split seed {}{})",
        source.description,
        args.split,
        dataset.len(),
        options.seed,
        if config.is_some() { ", from the checkpoint's training config" } else { ", trainer defaults" }
    );
    source.warnings.iter().for_each(|w| eprintln!("warning: {w}"));

    let predict = PredictOptions {
        batch_size: args.batch_size.or(config.as_ref().map(|c| c.batch_size)).unwrap_or(32).max(1),
        skip_corrupt: config.as_ref().is_some_and(|c| c.skip_corrupt),
        cache_dir: args.cache_dir.clone(),
    };
    let predictions = predict_dataset(loaded.model.as_ref(), dataset, &preprocess, &predict)?;
    predictions.skipped.iter().for_each(|s| eprintln!("warning: skipped corrupt image {}: {}", s.image, s.error));
    let inference_s = started.elapsed().as_secs_f64();

    let keys = predictions.patient_keys();
    let input = EvalInput { scores: &predictions.scores, labels: &predictions.labels, names: &names, patients: &keys };
    let bootstrap = BootstrapOptions { resamples: args.bootstrap, seed: args.seed, ..BootstrapOptions::default() };
    let mut report = evaluate(&input, &choice, &bootstrap)?;
    report.checkpoint = Some(args.checkpoint.display().to_string());
    report.data = Some(args.data.clone());
    report.split = Some(args.split.clone());
    let youden = if args.write_thresholds {
        let points: Vec<_> = report.classes.iter().map(|c| c.youden).collect();
        Some(youden_thresholds(&names, &points).context("cannot --write-thresholds")?)
    } else {
        None
    };

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.checkpoint.parent().unwrap_or(Path::new(".")).join(format!("eval-{}", args.split)));
    write_outputs(&out, &report)?;
    print!("{}", report.table());
    if let Some(thresholds) = youden {
        store_thresholds(&args.checkpoint, &thresholds)?;
        eprintln!("wrote the {} split's Youden thresholds into {}", args.split, args.checkpoint.display());
        if args.split == "test" {
            eprintln!(
                "note: thresholds chosen on the test split make test metrics at them optimistic; prefer --split val"
            );
        }
    }
    eprintln!(
        "wrote metrics.json, per_class.csv, roc.png, confusion.png to {} ({:.1} s, {:.1} s of it inference)",
        out.display(),
        started.elapsed().as_secs_f64(),
        inference_s
    );
    Ok(())
}
