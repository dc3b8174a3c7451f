//! `tools eval` end to end: train a small MLP with `tools train`, evaluate it, check the files and
//! numbers, the threshold write-back, and every bad input's one-line error.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tools")).args(args).output().expect("tools runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cxr-eval-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Trains an MLP on `data` for `epochs` into `dir/run`; returns best.safetensors and the number
/// of test images the trainer reported.
fn train_mlp(dir: &Path, data: &str, epochs: &str) -> (PathBuf, usize) {
    let runs = dir.to_str().unwrap();
    let (ok, _, err) = run(&[
        "--threads",
        "2",
        "train",
        "--data",
        data,
        "--arch",
        "mlp",
        "--epochs",
        epochs,
        "--batch-size",
        "32",
        "--seed",
        "5",
        "--runs-dir",
        runs,
        "--name",
        "run",
    ]);
    assert!(ok, "{err}");
    // "data: ... -> train A / val B / test C images"
    let line = err.lines().find(|l| l.starts_with("data: ")).expect("data line");
    let test: usize = line.rsplit("test ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    (dir.join("run").join("best.safetensors"), test)
}

fn error_line(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(args);
    assert!(!ok, "expected failure: {args:?}\n{stdout}");
    assert!(stderr.contains("error: ") && !stderr.contains("panicked"), "{stderr}");
    stderr
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn eval_on_phantoms_writes_the_report_and_rejects_bad_input() {
    let dir = scratch("phantom");
    let data = "phantom:160:28";
    let (checkpoint, test_images) = train_mlp(&dir, data, "2");
    let ck = checkpoint.to_str().unwrap();
    let out = dir.join("eval");
    let (ok, stdout, stderr) =
        run(&["eval", "--checkpoint", ck, "--data", data, "--bootstrap", "200", "--out", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Cardiomegaly") && stdout.contains("mean AUROC") && stdout.contains("hamming loss"));
    assert!(stdout.contains("skipped (AUROC undefined, no positive images): Atelectasis, "), "{stdout}");
    for file in ["metrics.json", "per_class.csv", "roc.png", "confusion.png"] {
        assert!(out.join(file).metadata().is_ok_and(|m| m.len() > 100), "{file} missing");
    }
    let m = json(&out.join("metrics.json"));
    // The trainer's test split, patient for patient (phantoms are one image per patient).
    assert_eq!(m["images"].as_u64().unwrap() as usize, test_images);
    assert_eq!(m["patients"].as_u64().unwrap() as usize, test_images);
    assert_eq!(m["classes"].as_array().unwrap().len(), 14);
    let skipped = m["skipped"].as_array().unwrap().len();
    assert!(skipped >= 10, "phantoms only paint 4 findings");
    assert_eq!(m["mean_auroc_classes"].as_u64().unwrap() as usize, 14 - skipped);
    let (mean, lo, hi) = (
        m["mean_auroc"].as_f64().unwrap(),
        m["mean_auroc_ci"]["lower"].as_f64().unwrap(),
        m["mean_auroc_ci"]["upper"].as_f64().unwrap(),
    );
    assert!(lo <= mean && mean <= hi && (0.0..=1.0).contains(&mean), "{mean} [{lo}, {hi}]");
    assert_eq!(m["bootstrap"]["resamples"], 200);
    assert_eq!(m["bootstrap"]["unit"], "patient");
    let cardio = &m["classes"][1];
    assert_eq!(cardio["name"], "Cardiomegaly");
    let c = &cardio["confusion"];
    let total = ["tp", "fp", "tn", "fn"].iter().map(|k| c[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(total as usize, test_images);
    assert_eq!(cardio["support"], c["tp"].as_u64().unwrap() + c["fn"].as_u64().unwrap());
    let hamming = m["hamming_loss"].as_f64().unwrap();
    assert!((m["label_wise_accuracy"].as_f64().unwrap() - (1.0 - hamming)).abs() < 1e-12);
    let csv = std::fs::read_to_string(out.join("per_class.csv")).unwrap();
    assert_eq!(csv.lines().count(), 15);
    assert!(csv.lines().nth(2).unwrap().starts_with("Cardiomegaly,"));

    // Bad input: one clear line each, nothing panics.
    let base = ["eval", "--checkpoint", ck, "--data", data, "--bootstrap", "0", "--out", out.to_str().unwrap()];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().chain(extra).copied().collect() };
    let e = error_line(&with(&["--threshold", "youden"]));
    assert!(e.contains("no Youden threshold for Atelectasis") && e.contains("Hernia"), "{e}");
    let e = error_line(&with(&["--write-thresholds"]));
    assert!(e.contains("cannot --write-thresholds") && e.contains("no Youden threshold"), "{e}");
    assert!(error_line(&with(&["--threshold", "1.5"])).contains("outside (0, 1)"));
    assert!(error_line(&with(&["--threshold", "0.2,0.3"])).contains("expected 1 or one per class (14)"));
    assert!(error_line(&with(&["--threshold", "checkpoint"])).contains("the checkpoint has no thresholds"));
    assert!(error_line(&with(&["--split", "holdout"])).contains("unknown split"));
    let missing = dir.join("nope.safetensors");
    let e = error_line(&["eval", "--checkpoint", missing.to_str().unwrap(), "--data", data]);
    assert!(e.contains("nope.safetensors"), "{e}");
    assert!(error_line(&["eval", "--checkpoint", ck, "--data", "/no/such/data.npz"]).contains("no such .npz file"));

    // A checkpoint whose label set differs from the data's.
    let renamed = dir.join("renamed.safetensors");
    std::fs::copy(&checkpoint, &renamed).unwrap();
    cxr::io::update_meta(&renamed, |m| m.labels[3] = "Lung_Opacity".into()).unwrap();
    let e = error_line(&["eval", "--checkpoint", renamed.to_str().unwrap(), "--data", data]);
    assert!(
        e.contains("label set differs") && e.contains("\"Lung_Opacity\" in the checkpoint but \"Infiltration\""),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn write_thresholds_round_trips_on_chestmnist_like() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/chestmnist_like.npz");
    if !data.is_file() {
        eprintln!("skipped: {} not found (real NIH data; see ../shared/data/README.md)", data.display());
        return;
    }
    let dir = scratch("npz");
    let data = data.to_str().unwrap();
    let (checkpoint, _) = train_mlp(&dir, data, "3");
    let ck = checkpoint.to_str().unwrap();
    let weights_before = tensors(&checkpoint);
    let out = dir.join("eval");
    let o = out.to_str().unwrap();
    let (ok, _, stderr) =
        run(&["eval", "--checkpoint", ck, "--data", data, "--bootstrap", "100", "--out", o, "--write-thresholds"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Youden thresholds into") && stderr.contains("prefer --split val"), "{stderr}");
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["images"], 598, "the official test split");
    assert_eq!(m["mean_auroc_classes"], 14);
    assert_eq!(m["bootstrap"]["unit"], "image", "npz rows have no patient ids");
    let youden: Vec<f32> = (0..14).map(|c| m["classes"][c]["youden"]["threshold"].as_f64().unwrap() as f32).collect();

    let (_, meta) = cxr::io::load_checkpoint(&checkpoint).unwrap();
    assert_eq!(meta.thresholds.as_deref(), Some(&youden[..]));
    assert_eq!(tensors(&checkpoint), weights_before, "weights unchanged");

    // Evaluating at the stored thresholds reproduces the Youden operating points.
    let (ok, _, stderr) =
        run(&["eval", "--checkpoint", ck, "--data", data, "--bootstrap", "0", "--out", o, "--threshold", "checkpoint"]);
    assert!(ok, "{stderr}");
    let m = json(&out.join("metrics.json"));
    for c in 0..14 {
        let class = &m["classes"][c];
        let recall = class["recall"].as_f64().unwrap();
        let tpr = class["youden"]["tpr"].as_f64().unwrap();
        assert!((recall - tpr).abs() < 1e-12, "class {c}: recall {recall} vs Youden tpr {tpr}");
        let spec = class["specificity"].as_f64().unwrap();
        assert!((1.0 - spec - class["youden"]["fpr"].as_f64().unwrap()).abs() < 1e-12);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every tensor of a checkpoint as (name, values).
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let file = cxr::io::WeightFile::open(path).unwrap();
    file.entries().iter().map(|e| (e.name.clone(), file.tensor(&e.name).unwrap().to_vec().unwrap())).collect()
}
