//! Grad-CAM points at the lesion: a ResNet18 trained briefly on the synthetic phantoms, explained
//! on the held-out test split, must put its map's peak inside the painted lesion's box far more
//! often than chance (the box's share of the image, which is what a randomly placed peak scores).

use cxr::data::transform::Grey;
use cxr::data::{open_source, Normalization, Preprocess, SourceOptions, FINDINGS};
use cxr::explain::{box_in_input, score, summarize, BoxScore, CamMethod, CamOptions};
use cxr::train::{train, PrintObserver, TrainConfig};
use cxr::Classifier;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const DATA: &str = "phantom:480:96";
const SIZE: usize = 96;
/// Required pointing-game hit rate over every scored box of the findings below (see the test).
const REQUIRED: f64 = 0.6;

fn config() -> TrainConfig {
    TrainConfig {
        data: DATA.into(),
        arch: "resnet18".into(),
        image_size: SIZE,
        batch_size: 16,
        epochs: 6,
        lr: 1e-3,
        seed: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn cam_peaks_fall_inside_painted_lesions() {
    let dir = std::env::temp_dir().join(format!("cxr-gradcam-phantom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let summary = train(&config(), &dir, false, &mut PrintObserver, Arc::new(AtomicBool::new(false))).unwrap();
    println!("trained {} steps, best validation mean AUROC {:.3}", summary.steps, summary.best_auroc.unwrap_or(0.0));
    let classifier = Classifier::load(dir.join("best.safetensors")).unwrap();

    let source = open_source(DATA, &SourceOptions { seed: 1, ..Default::default() }).unwrap();
    let test = source.test.clone();
    let grey = Preprocess { channels: 1, size: SIZE, normalization: Normalization::UnitRange };
    let mut images = Vec::new();
    let mut targets = Vec::new();
    let mut boxes = Vec::new();
    for i in 0..test.len() {
        let (lesions, (w, h)) = test.boxes(i);
        if lesions.is_empty() {
            continue;
        }
        let n = images.len();
        images.push(Grey { width: SIZE, height: SIZE, data: test.image(i, &grey, None).unwrap() });
        for b in lesions {
            targets.push((n, b.finding));
            boxes.push((test.image_id(i).to_string(), box_in_input(b, w, h, SIZE)));
        }
    }
    let mut scores: Vec<(CamMethod, Vec<BoxScore>)> = Vec::new();
    for method in [CamMethod::GradCam, CamMethod::GradCamPlusPlus, CamMethod::HiResCam] {
        let options = CamOptions { method, ..CamOptions::default() };
        let maps = classifier.explain_batch(&images, &targets, &options).unwrap();
        let s: Vec<BoxScore> = maps.iter().zip(&boxes).map(|(m, (name, b))| score(m, name, *b, 0.5)).collect();
        scores.push((method, s));
    }
    for (method, s) in &scores {
        println!("{}:", method.name());
        for f in summarize(s) {
            println!(
                "  {:<14} boxes {:3} scored {:3} hit rate {:.3} chance {:.3} mean IoU {:.3}",
                f.finding,
                f.boxes,
                f.scored,
                f.hit_rate.unwrap_or(0.0),
                f.chance.unwrap_or(0.0),
                f.mean_iou.unwrap_or(0.0)
            );
        }
    }
    let _ = FINDINGS;
    let grad_cam = &scores[0].1;
    let scored: Vec<&BoxScore> = grad_cam.iter().filter(|s| s.hit.is_some()).collect();
    let hits = scored.iter().filter(|s| s.hit == Some(true)).count();
    let rate = hits as f64 / scored.len() as f64;
    let chance = scored.iter().map(|s| s.area_fraction).sum::<f64>() / scored.len() as f64;
    println!("Grad-CAM overall: {hits}/{} = {rate:.3} (chance {chance:.3}, required {REQUIRED})", scored.len());
    assert!(scored.len() >= 40, "too few scored boxes: {}", scored.len());
    assert!(scored.len() * 10 >= grad_cam.len() * 9, "more than 10% of maps empty");
    assert!(rate >= REQUIRED, "pointing-game hit rate {rate:.3} < {REQUIRED} (chance {chance:.3})");
    let _ = std::fs::remove_dir_all(&dir);
}
