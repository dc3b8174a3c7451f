//! The device API: `Classifier::load`, `predict`, `explain`; thresholds; several threads at once;
//! bad input as clear errors.

use cxr::data::transform::{decode_image, Grey};
use cxr::data::FINDINGS;
use cxr::io::{save_checkpoint, CheckpointMeta};
use cxr::models::Architecture;
use cxr::{Classifier, DType, Device};
use std::path::PathBuf;
use std::sync::Arc;

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Classifier>();
    send_sync::<cxr::Prediction>();
    send_sync::<cxr::Heatmap>();
};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxr-classifier-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn meta(labels: Vec<String>, thresholds: Option<Vec<f32>>) -> CheckpointMeta {
    CheckpointMeta {
        format: 1,
        architecture: "resnet18".into(),
        in_channels: 1,
        num_classes: 14,
        input_size: Some(64),
        normalization: Some("unit-range".into()),
        labels,
        thresholds,
        ..Default::default()
    }
}

fn findings() -> Vec<String> {
    FINDINGS.iter().map(|s| s.to_string()).collect()
}

/// A randomly initialised ResNet18 at 64 px saved with `meta`.
fn checkpoint(name: &str, meta: &CheckpointMeta) -> PathBuf {
    let path = dir(name).join("model.safetensors");
    let model = Architecture::ResNet18.build(1, 14, 5, Device::Cpu).unwrap();
    save_checkpoint(&path, model.as_ref(), meta, DType::F32).unwrap();
    path
}

/// Deterministic grey images of different sizes.
fn images() -> Vec<Grey> {
    (0..3)
        .map(|k| {
            let (w, h) = (80 + 17 * k, 64 + 9 * k);
            let data =
                (0..w * h).map(|i| (((i * (k + 3)) % 97) as f32 / 96.0 + (i / w) as f32 / h as f32) / 2.0).collect();
            Grey { width: w, height: h, data }
        })
        .collect()
}

#[test]
fn predict_sorts_marks_and_needs_a_threshold() {
    let path = checkpoint("thresholds", &meta(findings(), None));
    let c = Classifier::load(&path).unwrap();
    let img = &images()[0];
    let err = c.predict(img).unwrap_err().to_string();
    assert!(err.contains("no decision thresholds") && err.contains("--threshold"), "{err}");
    // Probabilities need no threshold.
    let p = c.probabilities(std::slice::from_ref(img)).unwrap();
    assert_eq!(p[0].len(), 14);
    let c = c.with_threshold(0.5).unwrap();
    let pred = c.predict(img).unwrap();
    assert_eq!(pred.findings.len(), 14);
    for (f, &q) in pred.findings.iter().zip(&p[0]) {
        assert_eq!(f.probability, q);
        assert!((0.0..=1.0).contains(&f.probability));
        assert_eq!(f.detected, f.probability >= 0.5);
    }
    let sorted = pred.sorted();
    assert!(sorted.windows(2).all(|w| w[0].probability >= w[1].probability));
    // The checkpoint's own thresholds are used when present.
    let t: Vec<f32> = p[0].iter().map(|&q| q - 1e-4).collect(); // every finding just detected
    let path = checkpoint("own", &meta(findings(), Some(t)));
    let pred = Classifier::load(&path).unwrap().predict(img).unwrap();
    assert_eq!(pred.detected().len(), 14);
    assert!(Classifier::load(&path).unwrap().with_threshold(1.5).is_err());
}

#[test]
fn loaded_model_computes_what_the_saved_one_did() {
    use cxr::data::transform::{normalize, resize_crop};
    use cxr::data::Normalization;
    let path = checkpoint("same", &meta(findings(), None));
    let probabilities = Classifier::load(&path).unwrap().probabilities(&images()).unwrap();
    // The same weights (seed 5) built directly, with the same preprocessing by hand.
    let model = Architecture::ResNet18.build(1, 14, 5, Device::Cpu).unwrap();
    model.set_training(false);
    let _g = cxr::no_grad();
    for (img, p) in images().iter().zip(&probabilities) {
        let x = normalize(&resize_crop(img, 64), 1, Normalization::UnitRange);
        let logits = model.forward(&cxr::Tensor::from_vec(x, [1, 1, 64, 64]).unwrap()).unwrap().to_vec().unwrap();
        for (z, q) in logits.iter().zip(p) {
            assert!((1.0 / (1.0 + (-z).exp()) - q).abs() < 1e-6);
        }
    }
}

#[test]
fn several_threads_get_identical_results() {
    let path = checkpoint("threads", &meta(findings(), Some(vec![0.5; 14])));
    let c = Arc::new(Classifier::load(&path).unwrap());
    let imgs = Arc::new(images());
    let reference: Vec<_> = imgs.iter().map(|i| c.predict(i).unwrap()).collect();
    let reference_map = c.explain(&imgs[1], "Effusion").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (c, imgs) = (c.clone(), imgs.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for round in 0..3 {
                    let i = (t + round) % imgs.len();
                    out.push((i, c.predict(&imgs[i]).unwrap(), c.explain(&imgs[1], "Effusion").unwrap()));
                }
                out
            })
        })
        .collect();
    for h in handles {
        for (i, p, m) in h.join().unwrap() {
            assert_eq!(p, reference[i]);
            assert_eq!(m.values, reference_map.values);
        }
    }
}

#[test]
fn explain_gives_an_input_sized_map_and_names_bad_findings() {
    let path = checkpoint("explain", &meta(findings(), Some(vec![0.5; 14])));
    let c = Classifier::load(&path).unwrap();
    let img = &images()[2];
    let heat = c.explain(img, "Cardiomegaly").unwrap();
    assert_eq!((heat.width, heat.height, heat.values.len()), (64, 64, 64 * 64));
    assert_eq!((heat.map.width, heat.map.height), (2, 2));
    assert_eq!(heat.layer, "layer4");
    let p = c.predict(img).unwrap();
    assert!((heat.probability - p.get("Cardiomegaly").unwrap().probability).abs() < 1e-6);
    let err = c.explain(img, "Pneumonitis").unwrap_err().to_string();
    assert!(err.contains("no finding named 'Pneumonitis'") && err.contains("Hernia"), "{err}");
}

#[test]
fn bad_checkpoints_and_images_are_clear_errors() {
    let short: Vec<String> = findings().into_iter().take(13).collect();
    let err = Classifier::load(checkpoint("labels", &meta(short, None))).unwrap_err().to_string();
    assert!(err.contains("13 labels for a 14-class model"), "{err}");
    let err = Classifier::load(checkpoint("tlen", &meta(findings(), Some(vec![0.5; 3])))).unwrap_err().to_string();
    assert!(err.contains("bad thresholds: 3 thresholds for 14 findings"), "{err}");
    let mut other = findings();
    other[3] = "Infiltrate".into();
    let c = Classifier::load(checkpoint("other", &meta(other, None))).unwrap();
    let err = c.check_labels(&FINDINGS).unwrap_err().to_string();
    assert!(err.contains("labels") && err.contains("differ"), "{err}");
    let err = decode_image(b"", "empty.png").unwrap_err().to_string();
    assert!(err.contains("empty.png") && err.contains("empty"), "{err}");
    let err = decode_image(b"\x89PNG\r\n\x1a\nnot really", "broken.png").unwrap_err().to_string();
    assert!(err.contains("broken.png") && err.contains("cannot decode"), "{err}");
    let c = c.with_threshold(0.5).unwrap();
    let err = c.predict(&Grey { width: 0, height: 0, data: vec![] }).unwrap_err().to_string();
    assert!(err.contains("0x0"), "{err}");
    let err = c.predict_batch(&[]).unwrap_err().to_string();
    assert!(err.contains("no images"), "{err}");
}

#[test]
fn every_image_format_gives_the_same_prediction_as_its_grey_pixels() {
    use image::{ImageBuffer, Luma, Rgb};
    let path = checkpoint("formats", &meta(findings(), Some(vec![0.5; 14])));
    let c = Classifier::load(&path).unwrap();
    let (w, h) = (96u32, 72u32);
    let px = |x: u32, y: u32| ((x * 5 + y * 3) % 256) as u8;
    let mut png8 = Vec::new();
    ImageBuffer::<Luma<u8>, _>::from_fn(w, h, |x, y| Luma([px(x, y)]))
        .write_to(&mut std::io::Cursor::new(&mut png8), image::ImageFormat::Png)
        .unwrap();
    let mut png16 = Vec::new();
    ImageBuffer::<Luma<u16>, _>::from_fn(w, h, |x, y| Luma([px(x, y) as u16 * 257]))
        .write_to(&mut std::io::Cursor::new(&mut png16), image::ImageFormat::Png)
        .unwrap();
    let mut rgb = Vec::new();
    ImageBuffer::<Rgb<u8>, _>::from_fn(w, h, |x, y| Rgb([px(x, y); 3]))
        .write_to(&mut std::io::Cursor::new(&mut rgb), image::ImageFormat::Png)
        .unwrap();
    let p: Vec<_> = [png8, png16, rgb].iter().map(|b| c.predict(&decode_image(b, "x").unwrap()).unwrap()).collect();
    for q in &p[1..] {
        for (a, b) in q.findings.iter().zip(&p[0].findings) {
            assert!(
                (a.probability - b.probability).abs() < 1e-5,
                "{} {} vs {}",
                a.finding,
                a.probability,
                b.probability
            );
        }
    }
}
