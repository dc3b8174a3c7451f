//! Classify one chest X-ray and explain a finding with Grad-CAM, through the API a device links.
//!
//! ```sh
//! cargo run --release -p cxr-tools -- train                 # runs/run/best.safetensors (phantoms)
//! cargo run --release --example classify -- runs/run/best.safetensors chest.png [FINDING]
//! cargo run --release --example classify                   # no arguments: a self-contained demo
//! ```
//!
//! With no arguments the example saves an *untrained* ResNet18 checkpoint and draws a synthetic
//! phantom, so it runs anywhere; its probabilities mean nothing. It writes `classify_heatmap.png`
//! (the map of FINDING, or of the most probable finding, over the X-ray).

use cxr::data::transform::{load_image, Grey};
use cxr::data::{Phantoms, FINDINGS};
use cxr::explain::{write_overlay, Colormap};
use cxr::io::{save_checkpoint, CheckpointMeta};
use cxr::models::Architecture;
use cxr::Classifier;
use std::path::PathBuf;

fn demo_inputs() -> cxr::Result<(PathBuf, Grey)> {
    let path = std::env::temp_dir().join("cxr-classify-demo.safetensors");
    let model = Architecture::ResNet18.build(1, FINDINGS.len(), 0, cxr::Device::Cpu)?;
    let meta = CheckpointMeta {
        format: 1,
        architecture: "resnet18".into(),
        in_channels: 1,
        num_classes: FINDINGS.len(),
        input_size: Some(128),
        normalization: Some("unit-range".into()),
        labels: FINDINGS.iter().map(|s| s.to_string()).collect(),
        thresholds: Some(vec![0.5; FINDINGS.len()]),
        ..Default::default()
    };
    save_checkpoint(&path, model.as_ref(), &meta, cxr::DType::F32)?;
    println!("demo: an UNTRAINED model and a synthetic phantom (pass CHECKPOINT IMAGE for real use)");
    Ok((path, Phantoms::new(1, 256, 7).render(0)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (checkpoint, xray) = match args.as_slice() {
        [] => demo_inputs()?,
        [c, image, ..] => (PathBuf::from(c), load_image(image.as_ref())?),
        _ => return Err("usage: classify [CHECKPOINT IMAGE [FINDING]]".into()),
    };
    // Load once; a Classifier is Send + Sync and can serve several threads.
    let mut classifier = Classifier::load(&checkpoint)?;
    if classifier.thresholds().is_none() {
        println!("the checkpoint has no thresholds; using 0.5 for every finding");
        classifier = classifier.with_threshold(0.5)?;
    }
    let prediction = classifier.predict(&xray)?;
    for f in prediction.sorted() {
        println!("{} {:<20} {:.3}", if f.detected { "*" } else { " " }, f.finding, f.probability);
    }
    let detected = prediction.detected();
    println!("Detected: {}", if detected.is_empty() { "none".into() } else { detected.join(", ") });

    let finding = args.get(2).cloned().unwrap_or_else(|| prediction.sorted()[0].finding.clone());
    let heat = classifier.explain(&xray, &finding)?;
    match heat.validity().problem() {
        Some(problem) => println!("Grad-CAM of {finding}: {problem}"),
        None => {
            let out = PathBuf::from("classify_heatmap.png");
            write_overlay(&out, &classifier.resized(&xray), &heat, Colormap::Jet, 0.4)?;
            let (x, y) = heat.peak().unwrap_or_default();
            println!("Grad-CAM of {finding} (layer {}): peak at ({x}, {y}), written to {}", heat.layer, out.display());
        }
    }
    Ok(())
}
