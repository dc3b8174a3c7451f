//! `tools predict --checkpoint C IMAGE...`: every finding's probability, sorted, those at or
//! above threshold marked, and a `Detected: ...` line; `--json` for one JSON object per image,
//! `--gradcam` to also write a heatmap per detected finding.

use crate::images;
use anyhow::{Context, Result};
use clap::Args;
use cxr::data::transform::Grey;
use cxr::explain::{write_overlay, CamOptions, Colormap};
use cxr::{Classifier, Prediction};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct PredictArgs {
    /// A cxr checkpoint (from `tools train`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images (PNG/JPEG, any size, 8 or 16 bit, grey or RGB) or folders of them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Decision threshold for every finding, replacing the checkpoint's (needed when the
    /// checkpoint has none).
    #[arg(long)]
    threshold: Option<f32>,
    /// One JSON object per image instead of the table.
    #[arg(long)]
    json: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Also write a Grad-CAM overlay per detected finding (the most probable one when none is).
    #[arg(long)]
    gradcam: bool,
    /// Folder for the Grad-CAM PNGs.
    #[arg(long, default_value = "gradcam")]
    out: PathBuf,
    /// Heatmap colours: jet or inferno.
    #[arg(long, default_value = "jet")]
    colormap: String,
    /// Heatmap opacity over the X-ray, 0..1.
    #[arg(long, default_value_t = 0.4)]
    alpha: f32,
}

/// Loads the checkpoint and applies `--threshold`.
pub fn load_classifier(path: &Path, threshold: Option<f32>) -> Result<Classifier> {
    let classifier = Classifier::load(path)?;
    Ok(match threshold {
        Some(t) => classifier.with_threshold(t)?,
        None => classifier,
    })
}

pub fn run(args: &PredictArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be positive");
    let colormap = Colormap::parse(&args.colormap)?;
    let classifier = load_classifier(&args.checkpoint, args.threshold)?;
    if classifier.thresholds().is_none() {
        anyhow::bail!(
            "{}: the checkpoint has no decision thresholds; pass --threshold (e.g. --threshold 0.5) \
             or calibrate it with `tools eval`",
            args.checkpoint.display()
        );
    }
    let paths = images::collect(&args.images)?;
    if args.gradcam {
        std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    }
    for chunk in paths.chunks(args.batch_size) {
        let batch = images::load_all(chunk)?;
        let predictions = classifier.predict_batch(&batch)?;
        for (path, prediction) in chunk.iter().zip(&predictions) {
            if args.json {
                println!("{}", json_line(path, prediction)?);
            } else {
                print_table(path, prediction);
            }
        }
        if args.gradcam {
            explain(&classifier, chunk, &batch, &predictions, &args.out, colormap, args.alpha, args.json)?;
        }
    }
    Ok(())
}

fn json_line(path: &Path, p: &Prediction) -> Result<String> {
    let value = serde_json::json!({
        "image": path.display().to_string(),
        "findings": p.sorted(),
        "detected": p.detected(),
    });
    Ok(serde_json::to_string(&value)?)
}

fn print_table(path: &Path, p: &Prediction) {
    println!("{}", path.display());
    let width = p.findings.iter().map(|f| f.finding.len()).max().unwrap_or(8);
    for f in p.sorted() {
        let mark = if f.detected { "*" } else { " " };
        println!("  {mark} {:<width$}  {:.3}  (threshold {:.3})", f.finding, f.probability, f.threshold);
    }
    let detected = p.detected();
    println!("Detected: {}\n", if detected.is_empty() { "none".to_string() } else { detected.join(", ") });
}

/// The classes `--gradcam` explains for one prediction: the detected ones, else the top one.
fn classes_to_explain(p: &Prediction) -> Vec<usize> {
    let detected: Vec<usize> = p.sorted().into_iter().filter(|f| f.detected).map(|f| f.class).collect();
    if detected.is_empty() {
        p.sorted().first().map(|f| vec![f.class]).unwrap_or_default()
    } else {
        detected
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    classifier: &Classifier,
    paths: &[PathBuf],
    batch: &[Grey],
    predictions: &[Prediction],
    out: &Path,
    colormap: Colormap,
    alpha: f32,
    quiet: bool,
) -> Result<()> {
    let targets: Vec<(usize, usize)> = predictions
        .iter()
        .enumerate()
        .flat_map(|(i, p)| classes_to_explain(p).into_iter().map(move |c| (i, c)))
        .collect();
    let heatmaps = classifier.explain_batch(batch, &targets, &CamOptions::default())?;
    for heat in &heatmaps {
        let i = heat.map.image;
        let name = format!("{}_{}.png", images::stem(&paths[i]), images::file_safe(&heat.finding));
        let file = out.join(name);
        match heat.validity().problem() {
            Some(problem) => eprintln!("note: {} {}: {problem}; no image written", paths[i].display(), heat.finding),
            None => {
                write_overlay(&file, &classifier.resized(&batch[i]), heat, colormap, alpha)?;
                if !quiet {
                    println!("wrote {}", file.display());
                }
            }
        }
    }
    Ok(())
}
