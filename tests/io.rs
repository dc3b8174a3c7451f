//! Weight files: checkpoint round trips (f32 zero-copy, f16), strict loading with one complete
//! report, head replacement, grey-stem adaptation, and hostile or corrupt files.

use cxr::io::{load_checkpoint, load_into, save_checkpoint, CheckpointMeta, LoadOptions, WeightFile};
use cxr::models::{Architecture, Model};
use cxr::{DType, Device, Error, Tensor};
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxr-io-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn meta(arch: Architecture, classes: usize) -> CheckpointMeta {
    CheckpointMeta {
        format: 1,
        architecture: arch.name().into(),
        in_channels: 1,
        num_classes: classes,
        labels: (0..classes).map(|i| format!("finding{i}")).collect(),
        thresholds: Some(vec![0.5; classes]),
        epoch: Some(3),
        ..Default::default()
    }
}

fn outputs(model: &dyn Model) -> Vec<f32> {
    model.set_training(false);
    let _g = cxr::no_grad();
    let x = Tensor::rand_uniform([2, 1, 32, 32], 0.0, 1.0, 5, Device::Cpu).unwrap();
    model.forward(&x).unwrap().to_vec().unwrap()
}

#[test]
fn f32_checkpoint_round_trips_exactly_and_zero_copy() {
    let dir = temp_dir("f32");
    let path = dir.join("model.safetensors");
    let a = Architecture::ResNet18Small.build(1, 14, 1, Device::Cpu).unwrap();
    save_checkpoint(&path, a.as_ref(), &meta(Architecture::ResNet18Small, 14), DType::F32).unwrap();
    let (file, m) = load_checkpoint(&path).unwrap();
    assert_eq!(m, meta(Architecture::ResNet18Small, 14));
    let b = Architecture::parse(&m.architecture).unwrap().build(1, 14, 2, Device::Cpu).unwrap();
    assert_ne!(outputs(a.as_ref()), outputs(b.as_ref()), "different seeds must differ before loading");
    let report = load_into(b.as_ref(), &file, &LoadOptions::default()).unwrap();
    assert_eq!(report.loaded, b.named_tensors().len());
    assert_eq!(report.zero_copy, report.loaded, "aligned f32 tensors are borrowed from the mapping");
    assert_eq!(outputs(a.as_ref()), outputs(b.as_ref()));
    // Training writes copy the mapped data out first (copy on write), never into the file.
    let w = &b.parameters()[0].tensor;
    w.storage_mut().host_mut().unwrap()[0] += 1.0;
    let reread = WeightFile::open(&path).unwrap().tensor(&b.parameters()[0].name).unwrap();
    assert_ne!(reread.to_vec().unwrap()[0], w.to_vec().unwrap()[0]);
}

#[test]
fn f16_checkpoint_is_within_half_precision() {
    let dir = temp_dir("f16");
    let path = dir.join("model-f16.safetensors");
    let a = Architecture::Mlp.build(1, 14, 1, Device::Cpu).unwrap();
    save_checkpoint(&path, a.as_ref(), &meta(Architecture::Mlp, 14), DType::F16).unwrap();
    let (file, _) = load_checkpoint(&path).unwrap();
    assert!(file.entries().iter().all(|e| e.dtype == "F16"));
    let b = Architecture::Mlp.build(1, 14, 2, Device::Cpu).unwrap();
    load_into(b.as_ref(), &file, &LoadOptions::default()).unwrap();
    for (x, y) in a.named_tensors().iter().zip(b.named_tensors()) {
        for (u, v) in x.tensor.to_vec().unwrap().iter().zip(y.tensor.to_vec().unwrap()) {
            assert!((u - v).abs() <= u.abs() * 1e-3 + 1e-7, "{}: {u} vs {v}", x.name);
        }
    }
}

#[test]
fn mismatched_weights_report_every_problem_at_once() {
    let dir = temp_dir("mismatch");
    let path = dir.join("r18.safetensors");
    let r18 = Architecture::ResNet18.build(3, 1000, 1, Device::Cpu).unwrap();
    save_checkpoint(&path, r18.as_ref(), &meta(Architecture::ResNet18, 1000), DType::F32).unwrap();
    let file = WeightFile::open(&path).unwrap();
    // A 1-channel, 14-class ResNet34 misses blocks, has a different stem and head.
    let r34 = Architecture::ResNet34.build(1, 14, 1, Device::Cpu).unwrap();
    let err = load_into(r34.as_ref(), &file, &LoadOptions::default()).unwrap_err();
    let Error::WeightsMismatch { path: p, report } = &err else { panic!("{err}") };
    assert_eq!(p, &path);
    let msg = err.to_string();
    assert!(msg.contains("r18.safetensors"), "{msg}");
    assert!(report.contains("layer3.5.conv1.weight"), "missing tensors listed: {report}");
    assert!(report.contains("conv1.weight: file has [64, 3, 7, 7], model needs [64, 1, 7, 7]"), "{report}");
    assert!(report.contains("fc.weight: file has [1000, 512], model needs [14, 512]"), "{report}");
    // Nothing was loaded: a failed load leaves the model untouched.
    let fresh = Architecture::ResNet34.build(1, 14, 1, Device::Cpu).unwrap();
    assert_eq!(fresh.parameters()[0].tensor.to_vec().unwrap(), r34.parameters()[0].tensor.to_vec().unwrap());
}

#[test]
fn imagenet_weights_fine_tune_a_grey_14_class_model() {
    let dir = temp_dir("transfer");
    let path = dir.join("imagenet.safetensors");
    let src = Architecture::ResNet18.build(3, 1000, 1, Device::Cpu).unwrap();
    save_checkpoint(&path, src.as_ref(), &meta(Architecture::ResNet18, 1000), DType::F32).unwrap();
    let file = WeightFile::open(&path).unwrap();
    let dst = Architecture::ResNet18.build(1, 14, 9, Device::Cpu).unwrap();
    let head_before = dst.named_tensors().iter().find(|t| t.name == "fc.weight").unwrap().tensor.to_vec().unwrap();
    let opts = LoadOptions { replaceable_head: Some("fc".into()), adapt_input_channels: true };
    let report = load_into(dst.as_ref(), &file, &opts).unwrap();
    assert_eq!(report.channel_summed, ["conv1.weight"]);
    assert_eq!(report.reinitialized.len(), 2, "{:?}", report.reinitialized);
    let head_after = dst.named_tensors().iter().find(|t| t.name == "fc.weight").unwrap().tensor.to_vec().unwrap();
    assert_eq!(head_before, head_after, "the new head keeps its fresh initialisation");
    // conv1 of the grey model is the RGB kernel summed over channels.
    let rgb = src.named_tensors()[0].tensor.to_vec().unwrap();
    let grey = dst.named_tensors()[0].tensor.to_vec().unwrap();
    let want = rgb[0] + rgb[49] + rgb[98];
    assert!((grey[0] - want).abs() < 1e-6);
}

/// Writes a raw safetensors file: an 8-byte header length, the header, then `data`.
fn raw(dir: &Path, name: &str, header: &[u8], data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(data);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_err(path: &Path) -> String {
    let err = WeightFile::open(path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "error names the file: {msg}");
    msg
}

#[test]
fn hostile_and_corrupt_files_give_clear_errors() {
    let dir = temp_dir("hostile");
    let ok_header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let good = raw(&dir, "good.safetensors", ok_header, &[0; 8]);
    assert_eq!(WeightFile::open(&good).unwrap().tensor("w").unwrap().to_vec().unwrap(), [0.0, 0.0]);

    let empty = dir.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(open_err(&empty).contains("too short"));

    let png = dir.join("xray.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01").unwrap();
    assert!(open_err(&png).contains("not safetensors"), "{}", open_err(&png));

    let truncated = raw(&dir, "truncated.safetensors", ok_header, &[0; 5]);
    assert!(open_err(&truncated).contains("truncated"));

    let mut past_end = (1u64 << 20).to_le_bytes().to_vec();
    past_end.extend_from_slice(ok_header);
    let past = dir.join("past.safetensors");
    std::fs::write(&past, past_end).unwrap();
    assert!(open_err(&past).contains("past the end"));

    let huge = dir.join("huge.safetensors");
    std::fs::write(&huge, u64::MAX.to_le_bytes()).unwrap();
    assert!(open_err(&huge).contains("large"));

    let overlap = raw(
        &dir,
        "overlap.safetensors",
        br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    );
    assert!(open_err(&overlap).contains("offsets"));

    let out_of_range =
        raw(&dir, "range.safetensors", br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8]);
    open_err(&out_of_range);

    let wrong_size =
        raw(&dir, "size.safetensors", br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert!(open_err(&wrong_size).contains("shape and dtype"));

    let unknown = raw(&dir, "dtype.safetensors", br#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert!(open_err(&unknown).contains("JSON"));

    let not_utf8 = raw(&dir, "utf8.safetensors", b"{\"\xff\xfe\":1}", &[]);
    assert!(open_err(&not_utf8).contains("UTF-8"));

    let malformed = raw(&dir, "json.safetensors", br#"{"a":{"dtype":"F32","#, &[]);
    assert!(open_err(&malformed).contains("JSON"));

    let duplicate = raw(
        &dir,
        "dup.safetensors",
        br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    );
    assert!(open_err(&duplicate).contains("duplicate tensor name 'a'"));

    let int = raw(&dir, "int.safetensors", br#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, &[0; 8]);
    let f = WeightFile::open(&int).unwrap();
    assert!(f.tensor("a").unwrap_err().to_string().contains("dtype I64"));

    let missing = dir.join("nope.safetensors");
    assert!(matches!(WeightFile::open(&missing), Err(Error::Io { .. })));
}

#[test]
fn plain_weight_file_is_not_a_checkpoint() {
    let dir = temp_dir("plain");
    let p = raw(&dir, "plain.safetensors", br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]);
    let err = load_checkpoint(&p).unwrap_err().to_string();
    assert!(err.contains("no cxr metadata"), "{err}");
}

#[test]
fn failed_save_keeps_the_previous_checkpoint() {
    let dir = temp_dir("atomic");
    let path = dir.join("best.safetensors");
    let m = Architecture::Mlp.build(1, 14, 1, Device::Cpu).unwrap();
    save_checkpoint(&path, m.as_ref(), &meta(Architecture::Mlp, 14), DType::F32).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Saving into a folder that does not exist fails without touching anything else.
    let bad = dir.join("no-such-dir").join("best.safetensors");
    assert!(matches!(
        save_checkpoint(&bad, m.as_ref(), &meta(Architecture::Mlp, 14), DType::F32),
        Err(Error::Io { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left behind");
}
