//! `tools data stats` and `tools data check` end to end.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tools")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn data_stats_and_check_on_phantoms() {
    let (ok, out, err) = run(&["data", "stats", "--data", "phantom:60:16", "--seed", "3"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("images: 60   patients: 60") && out.contains("Cardiomegaly") && out.contains("No Finding"),
        "{out}"
    );
    assert!(out.contains("train") && out.contains("test"), "{out}");
    let (ok, out, err) = run(&["data", "check", "--data", "phantom:20:16"]);
    assert!(ok, "{err}");
    assert!(out.contains("checked 20 images") && out.contains("0 failed"), "{out}");
}

#[test]
fn data_check_reports_a_corrupt_file() {
    let dir = std::env::temp_dir().join(format!("cxr-datacli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let findings = "Atelectasis,Cardiomegaly,Effusion,Infiltration,Mass,Nodule,Pneumonia,Pneumothorax,Consolidation,Edema,Emphysema,Fibrosis,Pleural_Thickening,Hernia";
    let zeros = ["0"; 14].join(",");
    std::fs::write(dir.join("bad.png"), b"garbage").unwrap();
    std::fs::write(dir.join("labels.csv"), format!("image,patient_id,{findings},view\nbad.png,1,{zeros},PA\n"))
        .unwrap();
    let (ok, out, err) = run(&["data", "check", "--data", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("FAILED") && out.contains("bad.png") && err.contains("1 of 1 images failed"), "{out}\n{err}");
    let (ok, _, err) = run(&["data", "stats", "--data", "/nonexistent/place"]);
    assert!(!ok && err.contains("not a data source"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
