//! Grad-CAM, Grad-CAM++ and HiResCAM against PyTorch: torchvision's resnet18 with the formula
//! weights of `scripts/model_fixtures.py`, maps computed in PyTorch from its own layer4 activations
//! and gradients (`scripts/gradcam_fixtures.py` writes `tests/fixtures/gradcam.json`); and the same
//! for torchvision's densenet121 at `features.norm5` after its ReLU
//! (`tests/fixtures/gradcam_densenet121.json`).

use cxr::explain::{grad_cam, CamMethod, CamOptions, MapValidity};
use cxr::models::Architecture;
use cxr::{Device, Tensor};
use serde_json::Value;

mod formula;
use formula::{fill_values, uniform};

/// Relative tolerance max|ours - torch| / max|torch|, the same as tests/golden_models.rs uses for
/// logits and gradients; PyTorch's own float32-vs-float64 gap is printed next to ours.
const TOLERANCE: f64 = 1e-4;

fn fixture() -> Value {
    fixture_named("gradcam.json")
}

fn fixture_named(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

fn model_and_input(f: &Value) -> (Box<dyn cxr::models::Model>, Tensor) {
    let arch = Architecture::parse(f["architecture"].as_str().unwrap()).unwrap();
    let model = arch.build(3, 14, 0, Device::Cpu).unwrap();
    for (k, t) in model.named_tensors().iter().enumerate() {
        *t.tensor.storage_mut() = cxr::Storage::Cpu(fill_values(&t.name, t.tensor.dims(), k));
    }
    model.set_training(false);
    model.set_trainable(&|_| true, false).unwrap();
    let shape: Vec<usize> = f["input_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let seed = f["input_seed"].as_u64().unwrap();
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n as u64).map(|i| uniform(seed << 32, i) as f32).collect();
    (model, Tensor::from_vec(x, shape).unwrap())
}

fn rel_err(ours: &[f32], theirs: &[f64]) -> f64 {
    let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = ours.iter().zip(theirs).fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

#[test]
fn maps_match_pytorch_for_every_method() {
    check_against(&fixture(), 12);
}

#[test]
fn densenet_maps_at_norm5_match_pytorch() {
    check_against(&fixture_named("gradcam_densenet121.json"), 12);
}

fn check_against(f: &Value, expected_maps: usize) {
    let (model, x) = model_and_input(f);
    let layer = f["layer"].as_str().unwrap();
    let dims: Vec<usize> =
        f["activation_shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let targets: Vec<(usize, usize)> = f["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize))
        .collect();
    let variants = [
        ("gradcam", CamMethod::GradCam, true),
        ("gradcam++", CamMethod::GradCamPlusPlus, true),
        ("hirescam", CamMethod::HiResCam, true),
        ("gradcam_norelu", CamMethod::GradCam, false),
    ];
    let mut checked = 0;
    for (name, method, relu) in variants {
        // The default layer is the fixture's: layer4 for ResNet, features.norm5 for DenseNet.
        let options = CamOptions { method, layer: None, relu };
        let out = grad_cam(model.as_ref(), &x, &targets, &options).unwrap();
        assert_eq!(out.layer, layer);
        let logits: Vec<f64> = f["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let logit_err = rel_err(&out.logits, &logits);
        assert!(logit_err < TOLERANCE, "logits differ by {logit_err:.2e}");
        for map in &out.maps {
            let expected = f["maps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["image"] == map.image as u64 && m["class"] == map.class as u64 && m["method"] == name)
                .expect("fixture has the map");
            let values: Vec<f64> = expected["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!((map.height, map.width), (dims[2], dims[3]));
            let torch_gap = expected["torch_f32_vs_f64"].as_f64().unwrap();
            let err = rel_err(&map.values, &values);
            println!(
                "{name:15} image {} class {:2}: max|torch| {:.4}, ours vs torch {err:.2e} (torch f32 vs f64 {torch_gap:.2e})",
                map.image,
                map.class,
                values.iter().fold(0f64, |m, v| m.max(v.abs()))
            );
            if values.iter().all(|&v| v == 0.0) {
                // PyTorch's map is all zero after ReLU: ours must be too, and say so.
                assert_eq!(map.validity, MapValidity::AllZero, "{name} {map:?}");
                assert!(map.values.iter().all(|&v| v == 0.0));
            } else {
                assert_eq!(map.validity, MapValidity::Valid);
                assert!(err < TOLERANCE, "{name} image {} class {}: {err:.2e}", map.image, map.class);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, expected_maps);
}

#[test]
fn unknown_layer_lists_the_valid_ones_and_the_mlp_has_none() {
    let f = fixture();
    let (model, x) = model_and_input(&f);
    let options = CamOptions { layer: Some("layer5".into()), ..CamOptions::default() };
    let err = grad_cam(model.as_ref(), &x, &[(0, 0)], &options).unwrap_err().to_string();
    assert!(err.contains("no layer named 'layer5'") && err.contains("layer4") && err.contains("stem"), "{err}");
    let err = grad_cam(model.as_ref(), &x, &[(2, 0)], &CamOptions::default()).unwrap_err().to_string();
    assert!(err.contains("outside a batch of 2"), "{err}");
    let mlp = Architecture::Mlp.build(1, 14, 0, Device::Cpu).unwrap();
    let err = cxr::explain::default_layer(mlp.as_ref()).unwrap_err().to_string();
    assert!(err.contains("no convolutional feature map"), "{err}");
}

#[test]
fn one_batch_with_per_image_classes_equals_single_image_calls() {
    let f = fixture();
    let (model, x) = model_and_input(&f);
    let options = CamOptions { method: CamMethod::HiResCam, relu: false, layer: None };
    let batch = grad_cam(model.as_ref(), &x, &[(0, 5), (1, 9)], &options).unwrap();
    let xs = x.to_vec().unwrap();
    let half = xs.len() / 2;
    for (i, class) in [(0usize, 5usize), (1, 9)] {
        let xi = Tensor::from_vec(xs[i * half..(i + 1) * half].to_vec(), [1, 3, 128, 128]).unwrap();
        let single = grad_cam(model.as_ref(), &xi, &[(0, class)], &options).unwrap();
        let err = rel_err(&single.maps[0].values, &batch.maps[i].values.iter().map(|&v| v as f64).collect::<Vec<_>>());
        assert!(err < 1e-5, "image {i}: {err:.2e}");
    }
}

#[test]
fn backward_never_touches_frozen_weights_or_the_backbone() {
    let f = fixture();
    let (model, x) = model_and_input(&f);
    grad_cam(model.as_ref(), &x, &[(0, 1)], &CamOptions::default()).unwrap();
    assert!(model.named_tensors().iter().all(|t| t.tensor.grad().is_none()));
}
