//! `tools predict` and `tools gradcam` as a user runs them.

use cxr::data::FINDINGS;
use cxr::io::{save_checkpoint, CheckpointMeta};
use cxr::models::Architecture;
use image::{ImageBuffer, Luma, Rgb};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tools")).args(args).output().expect("tools runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxr-predict-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An untrained ResNet18 at 64 px, with or without thresholds.
fn checkpoint(d: &Path, thresholds: Option<Vec<f32>>) -> String {
    let path = d.join("model.safetensors");
    let model = Architecture::ResNet18.build(1, 14, 3, cxr::Device::Cpu).unwrap();
    let meta = CheckpointMeta {
        format: 1,
        architecture: "resnet18".into(),
        in_channels: 1,
        num_classes: 14,
        input_size: Some(64),
        normalization: Some("unit-range".into()),
        labels: FINDINGS.iter().map(|s| s.to_string()).collect(),
        thresholds,
        ..Default::default()
    };
    save_checkpoint(&path, model.as_ref(), &meta, cxr::DType::F32).unwrap();
    path.to_str().unwrap().to_string()
}

/// Three images in `d/images`: 8-bit grey PNG, 16-bit grey PNG, RGB JPEG, of different sizes.
fn images(d: &Path) -> PathBuf {
    let folder = d.join("images");
    std::fs::create_dir_all(&folder).unwrap();
    let px = |x: u32, y: u32| ((x * 7 + y * 3) % 256) as u8;
    ImageBuffer::<Luma<u8>, _>::from_fn(90, 70, |x, y| Luma([px(x, y)])).save(folder.join("a.png")).unwrap();
    ImageBuffer::<Luma<u16>, _>::from_fn(128, 128, |x, y| Luma([px(y, x) as u16 * 257]))
        .save(folder.join("b.png"))
        .unwrap();
    ImageBuffer::<Rgb<u8>, _>::from_fn(100, 150, |x, y| Rgb([px(x, y), px(x, y), 255 - px(x, y)]))
        .save(folder.join("c.jpg"))
        .unwrap();
    folder
}

#[test]
fn predict_prints_sorted_marked_findings_for_a_folder() {
    let d = dir("table");
    let thresholds: Vec<f32> = (0..14).map(|i| 0.3 + 0.03 * i as f32).collect();
    let ckpt = checkpoint(&d, Some(thresholds.clone()));
    let folder = images(&d);
    let (ok, stdout, stderr) = run(&["predict", "--checkpoint", &ckpt, folder.to_str().unwrap(), "--batch-size", "2"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("Detected: ").count(), 3, "{stdout}");
    for block in stdout.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let rows: Vec<(bool, String, f32, f32)> = block
            .lines()
            .filter(|l| l.contains("(threshold"))
            .map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                let marked = parts[0] == "*";
                let rest = if marked { &parts[1..] } else { &parts[..] };
                let t: f32 = rest[3].trim_end_matches(')').parse().unwrap();
                (marked, rest[0].to_string(), rest[1].parse().unwrap(), t)
            })
            .collect();
        assert_eq!(rows.len(), 14, "{block}");
        assert!(rows.windows(2).all(|w| w[0].2 >= w[1].2), "not sorted: {block}");
        for (marked, finding, p, t) in &rows {
            assert_eq!(*marked, p >= t, "{finding}: {block}");
            let i = FINDINGS.iter().position(|f| f == finding).unwrap();
            assert!((t - thresholds[i]).abs() < 1e-3);
        }
        let detected: Vec<&str> = rows.iter().filter(|r| r.0).map(|r| r.1.as_str()).collect();
        let expected = if detected.is_empty() { "none".to_string() } else { detected.join(", ") };
        assert!(block.contains(&format!("Detected: {expected}")), "{block}");
    }
}

#[test]
fn predict_json_threshold_and_gradcam() {
    let d = dir("json");
    let ckpt = checkpoint(&d, None);
    let folder = images(&d);
    let a = folder.join("a.png");
    let c = folder.join("c.jpg");
    let (ok, _, stderr) = run(&["predict", "--checkpoint", &ckpt, a.to_str().unwrap()]);
    assert!(!ok && stderr.contains("no decision thresholds") && stderr.contains("--threshold"), "{stderr}");
    let out = d.join("maps");
    let (ok, stdout, stderr) = run(&[
        "predict",
        "--checkpoint",
        &ckpt,
        a.to_str().unwrap(),
        c.to_str().unwrap(),
        "--threshold",
        "0.5",
        "--json",
        "--gradcam",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let f = line["findings"].as_array().unwrap();
        assert_eq!(f.len(), 14);
        let p: Vec<f64> = f.iter().map(|x| x["probability"].as_f64().unwrap()).collect();
        assert!(p.windows(2).all(|w| w[0] >= w[1]));
        let detected: Vec<&str> =
            f.iter().filter(|x| x["detected"] == true).map(|x| x["finding"].as_str().unwrap()).collect();
        let listed: Vec<&str> = line["detected"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        assert_eq!(detected, listed);
    }
    // One overlay per explained finding, or a note saying why the map was not drawn.
    let written = std::fs::read_dir(&out).unwrap().count();
    let notes = stderr.matches("no image written").count();
    assert!(written + notes >= 2, "{written} files, {stderr}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let d = dir("bad");
    let ckpt = checkpoint(&d, Some(vec![0.5; 14]));
    let bad = d.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let empty = d.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    for (file, says) in [(&bad, "cannot decode"), (&empty, "empty image")] {
        let (ok, _, stderr) = run(&["predict", "--checkpoint", &ckpt, file.to_str().unwrap()]);
        assert!(!ok && stderr.starts_with("error: ") && stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let folder = images(&d);
    let img = folder.join("a.png");
    let img = img.to_str().unwrap();
    let (ok, _, stderr) = run(&["gradcam", "--checkpoint", &ckpt, img, "--class", "Pneumonitis"]);
    assert!(!ok && stderr.contains("no finding named 'Pneumonitis'") && stderr.contains("Effusion"), "{stderr}");
    let (ok, _, stderr) = run(&["gradcam", "--checkpoint", &ckpt, img, "--layer", "layer9"]);
    assert!(!ok && stderr.contains("no layer named 'layer9'") && stderr.contains("layer4"), "{stderr}");
    let (ok, _, stderr) = run(&["gradcam", "--checkpoint", &ckpt, img, "--method", "scorecam"]);
    assert!(!ok && stderr.contains("unknown method 'scorecam'"), "{stderr}");
    let (ok, _, stderr) = run(&["predict", "--checkpoint", d.join("none.safetensors").to_str().unwrap(), img]);
    assert!(!ok && stderr.contains("none.safetensors"), "{stderr}");
}

#[test]
fn gradcam_on_phantoms_writes_overlays_a_panel_and_a_localisation_table() {
    let d = dir("phantom");
    let ckpt = checkpoint(&d, Some(vec![0.5; 14]));
    let out = d.join("out");
    let (ok, stdout, stderr) = run(&[
        "gradcam",
        "--checkpoint",
        &ckpt,
        "--data",
        "phantom:40:64",
        "--split",
        "all",
        "--limit",
        "12",
        "--method",
        "gradcam++",
        "--colormap",
        "inferno",
        "--panel",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("localisation (gradcam++") && stdout.contains("hit rate"), "{stdout}");
    assert!(out.join("panel.png").is_file(), "{stderr}");
    let overlays = std::fs::read_dir(&out).unwrap().filter(|e| e.as_ref().unwrap().file_name() != "panel.png").count();
    assert!(overlays >= 1, "{stderr}");
    let panel = image::open(out.join("panel.png")).unwrap();
    assert!(panel.width() > 64 && panel.height() > 64);
}

#[test]
fn gradcam_scores_nih_images_against_radiologist_boxes() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    let (images, boxes) = (data.join("nih256"), data.join("labels/BBox_List_2017.csv.gz"));
    if !images.is_dir() || !boxes.is_file() {
        println!("skipped: NIH data not found at {} (see ../shared/data/README.md)", data.display());
        return;
    }
    let d = dir("boxes");
    let ckpt = checkpoint(&d, Some(vec![0.5; 14]));
    let out = d.join("out");
    let (ok, stdout, stderr) = run(&[
        "gradcam",
        "--checkpoint",
        &ckpt,
        "--data",
        images.to_str().unwrap(),
        "--split",
        "all",
        "--boxes",
        boxes.to_str().unwrap(),
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The six boxes on nih256 images: 2 Cardiomegaly, 1 Infiltrate (= Infiltration), 2 Nodule,
    // 1 Pneumonia.
    let summary = report["localization"].as_array().unwrap();
    let count = |f: &str| summary.iter().find(|s| s["finding"] == f).map_or(0, |s| s["boxes"].as_u64().unwrap());
    assert_eq!(
        [count("Cardiomegaly"), count("Infiltration"), count("Nodule"), count("Pneumonia")],
        [2, 1, 2, 1],
        "{stdout}"
    );
    for b in report["boxes"].as_array().unwrap() {
        let area = b["area_fraction"].as_f64().unwrap();
        assert!(area > 0.0 && area < 0.5, "{b}");
        if let Some(iou) = b["iou"].as_f64() {
            assert!((0.0..=1.0).contains(&iou));
        }
    }
}
