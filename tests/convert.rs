//! Weights converted from PyTorch checkpoints by `scripts/convert_weights.py`: the CheXNet layout
//! (DataParallel + `densenet121.` prefixes, pre-0.4 DenseNet names, `classifier.0` head), the
//! TorchXRayVision layout (1-channel, 18-output DenseNet121 with extra buffers), a torchvision
//! ResNet18 bare state_dict and a ResNet50 `model_state_dict` wrapper.
//!
//! `tests/fixtures/convert/CASE.safetensors.gz.gz` is the converter's actual output, gzipped twice
//! (the checkpoints' weights follow a periodic formula so the files compress ~1000:1; see
//! `scripts/make_convert_fixtures.py`). `CASE.json` holds the converted header, the converter's
//! metadata and PyTorch's eval-mode logits of torchvision's model loaded from that same file.
//! These tests prove that the converted names, shapes, dtypes and values fit cxr's models strictly
//! and give PyTorch's logits. They do not prove the converter handles real pretrained files beyond
//! these four layouts as rebuilt with torchvision (no real checkpoint is available offline).

use cxr::io::checkpoint::read_meta;
use cxr::io::{load_into, LoadOptions, WeightFile};
use cxr::models::Architecture;
use cxr::{Device, Tensor};
use flate2::read::GzDecoder;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const CASES: [&str; 4] = ["chexnet", "xrv", "resnet18", "resnet50"];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert")
}

fn fixture(case: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join(format!("{case}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Unpacks the converter's output for `case` into a temporary file and opens it.
fn converted(case: &str) -> WeightFile {
    let packed = std::fs::read(fixture_dir().join(format!("{case}.safetensors.gz.gz"))).unwrap();
    let mut once = Vec::new();
    GzDecoder::new(packed.as_slice()).read_to_end(&mut once).unwrap();
    let mut raw = Vec::new();
    GzDecoder::new(once.as_slice()).read_to_end(&mut raw).unwrap();
    let dir = std::env::temp_dir().join(format!("cxr-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per call: the tests run in parallel and must not rewrite each other's mapped files.
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let path = dir.join(format!("{case}-{}.safetensors", COUNT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, raw).unwrap();
    let file = WeightFile::open(&path).unwrap();
    // The mapping outlives the name (Unix); elsewhere the removal may fail and the file stays.
    let _ = std::fs::remove_file(&path);
    file
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn architecture(fx: &Value) -> Architecture {
    Architecture::parse(fx["architecture"].as_str().unwrap()).unwrap()
}

#[test]
fn converted_files_carry_torchvision_names_and_cxr_metadata() {
    for case in CASES {
        let fx = fixture(case);
        let file = converted(case);
        let header: Vec<(String, String, Vec<usize>)> = fx["header"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e[0].as_str().unwrap().into(),
                    e[1].as_str().unwrap().into(),
                    e[2].as_array().unwrap().iter().map(usize_of).collect(),
                )
            })
            .collect();
        let got: Vec<(String, String, Vec<usize>)> =
            file.entries().iter().map(|e| (e.name.clone(), e.dtype.clone(), e.shape.clone())).collect();
        assert_eq!(got, header, "{case}: header differs from the fixture");
        assert!(file.entries().iter().all(|e| e.dtype == "F32"), "{case}");
        assert!(
            !file.entries().iter().any(|e| e.name.contains("num_batches_tracked")
                || e.name.starts_with("module.")
                || e.name.contains(".norm.1.")
                || e.name.contains("classifier.0.")
                || e.name == "op_threshs"),
            "{case}: an unconverted name survived"
        );
        let meta = read_meta(&file).unwrap();
        assert_eq!(meta.format, 1);
        assert_eq!(meta.architecture, fx["architecture"].as_str().unwrap(), "{case}");
        assert_eq!(meta.in_channels, usize_of(&fx["in_channels"]), "{case}");
        assert_eq!(meta.num_classes, usize_of(&fx["num_classes"]), "{case}");
        let labels: Vec<&str> = meta.labels.iter().map(String::as_str).collect();
        match case {
            "chexnet" => {
                assert_eq!(labels.len(), 14);
                assert_eq!(labels[..3], ["Atelectasis", "Cardiomegaly", "Effusion"]);
                assert_eq!(labels[13], "Hernia");
            }
            "xrv" => {
                assert_eq!(labels.len(), 18);
                assert_eq!(labels[..3], ["Atelectasis", "Consolidation", "Infiltration"]);
                assert_eq!(labels[17], "Enlarged Cardiomediastinum");
            }
            _ => assert!(labels.is_empty(), "{case}: ImageNet weights carry no finding labels"),
        }
    }
}

#[test]
fn converted_files_load_strictly_into_the_matching_architecture() {
    for case in CASES {
        let fx = fixture(case);
        let file = converted(case);
        let arch = architecture(&fx);
        let model = arch.build(usize_of(&fx["in_channels"]), usize_of(&fx["num_classes"]), 1, Device::Cpu).unwrap();
        let report = load_into(model.as_ref(), &file, &LoadOptions::default()).unwrap();
        assert_eq!(report.loaded, model.named_tensors().len(), "{case}");
        assert_eq!(report.loaded, file.entries().len(), "{case}: every file tensor is used");
        assert_eq!(report.zero_copy, report.loaded, "{case}: aligned f32 is borrowed from the mapping");
        assert!(report.reinitialized.is_empty() && report.channel_summed.is_empty() && report.ignored.is_empty());
    }
}

#[test]
fn converted_files_load_for_grey_14_finding_fine_tuning() {
    // What `tools train --pretrained F --channels 1` does: 1 input channel, 14 findings.
    for case in CASES {
        let fx = fixture(case);
        let file = converted(case);
        let arch = architecture(&fx);
        let model = arch.build(1, 14, 1, Device::Cpu).unwrap();
        let opts = LoadOptions { replaceable_head: Some(arch.head_name().into()), adapt_input_channels: true };
        let report = load_into(model.as_ref(), &file, &opts).unwrap();
        let stem = if arch == Architecture::DenseNet121 { "features.conv0.weight" } else { "conv1.weight" };
        let summed = usize_of(&fx["in_channels"]) == 3;
        assert_eq!(report.channel_summed, if summed { vec![stem.to_string()] } else { vec![] }, "{case}");
        let head_kept = usize_of(&fx["num_classes"]) == 14;
        assert_eq!(report.reinitialized.len(), if head_kept { 0 } else { 2 }, "{case}: {:?}", report.reinitialized);
        assert_eq!(report.loaded + report.reinitialized.len(), model.named_tensors().len(), "{case}");
        // Without the options the same load is refused, naming the stem or the head.
        if summed || !head_kept {
            let err = load_into(model.as_ref(), &file, &LoadOptions::default()).unwrap_err().to_string();
            assert!(err.contains(if summed { stem } else { arch.head_name() }), "{case}: {err}");
        }
    }
}

/// x[i] = ((7 i) mod 101) / 100, as the fixture script computes it.
fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let values = (0..n).map(|i| (((i * 7) % 101) as f64 / 100.0) as f32).collect();
    Tensor::from_vec(values, shape.to_vec()).unwrap()
}

#[test]
fn converted_weights_give_pytorchs_logits() {
    for case in CASES {
        let fx = fixture(case);
        let file = converted(case);
        let arch = architecture(&fx);
        let model = arch.build(usize_of(&fx["in_channels"]), usize_of(&fx["num_classes"]), 7, Device::Cpu).unwrap();
        load_into(model.as_ref(), &file, &LoadOptions::default()).unwrap();
        model.set_training(false);
        let _g = cxr::no_grad();
        let shape: Vec<usize> = fx["input_shape"].as_array().unwrap().iter().map(usize_of).collect();
        let got = model.forward(&input(&shape)).unwrap().to_vec().unwrap();
        let want: Vec<f64> = fx["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got.len(), want.len(), "{case}");
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b).abs())) / scale;
        assert!(err <= 1e-4, "{case}: logits differ from PyTorch's by {err:e} (relative to max |logit| {scale})");
    }
}
