//! The `tools` binary as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn tools() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tools"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = tools().args(args).output().expect("tools runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn help_lists_the_commands() {
    let (ok, stdout, _) = run(&["--help"]);
    assert!(ok);
    assert!(stdout.contains("bench") && stdout.contains("info"), "{stdout}");
}

#[test]
fn bench_json_lines_have_the_documented_fields() {
    let (ok, stdout, stderr) =
        run(&["--threads", "2", "bench", "--quick", "--json", "--only", "gemm", "--gemm-sizes", "32,64"]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 2);
    for (line, n) in lines.iter().zip([32, 64]) {
        assert_eq!(line["name"], format!("gemm.{n}"));
        assert_eq!(line["threads"], 2);
        assert_eq!(line["unit"], "ms");
        let (min, med, max) =
            (line["min"].as_f64().unwrap(), line["median"].as_f64().unwrap(), line["max"].as_f64().unwrap());
        assert!(0.0 < min && min <= med && med <= max, "{line}");
        assert!(line["gflops"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bench_rejects_an_unknown_group() {
    let (ok, _, stderr) = run(&["bench", "--only", "fft"]);
    assert!(!ok);
    assert!(stderr.contains("unknown benchmark group 'fft'"), "{stderr}");
}

#[test]
fn info_on_a_missing_or_bad_file_names_it() {
    let dir = std::env::temp_dir().join(format!("cxr-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad: PathBuf = dir.join("bad.safetensors");
    std::fs::write(&bad, b"definitely not safetensors").unwrap();
    let (ok, _, stderr) = run(&["info", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.starts_with("error: ") && stderr.contains("bad.safetensors"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, _, stderr) = run(&["info", dir.join("missing.safetensors").to_str().unwrap()]);
    assert!(!ok && stderr.contains("missing.safetensors"), "{stderr}");
}

#[test]
fn info_shows_a_checkpoint() {
    use cxr::io::{save_checkpoint, CheckpointMeta};
    use cxr::models::Architecture;
    let dir = std::env::temp_dir().join(format!("cxr-cli-info-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mlp.safetensors");
    let model = Architecture::Mlp.build(1, 14, 0, cxr::Device::Cpu).unwrap();
    let meta =
        CheckpointMeta { format: 1, architecture: "mlp".into(), in_channels: 1, num_classes: 14, ..Default::default() };
    save_checkpoint(&path, model.as_ref(), &meta, cxr::DType::F16).unwrap();
    let (ok, stdout, stderr) = run(&["info", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("parameters:  {}", model.parameter_count())), "{stdout}");
    assert!(stdout.contains("architecture: \"mlp\"") && stdout.contains("F16"), "{stdout}");
    assert!(stdout.contains("fc1.weight") && stdout.contains("[512, 784]"), "{stdout}");
}

#[test]
fn info_devices_lists_the_cpu_and_says_what_cuda_found() {
    let (ok, out, err) = run(&["info", "--devices"]);
    assert!(ok, "{err}");
    assert!(out.contains("cpu:") && out.contains("cuda") && out.contains("nvrtc"), "{out}");
}

#[test]
fn cuda_without_a_usable_gpu_is_one_clear_error_line() {
    let (ok, out, err) = run(&["bench", "--device", "cuda", "--quick", "--gemm-sizes", "64", "--only", "gemm"]);
    if ok {
        // A machine with a GPU: the benchmark ran.
        assert!(out.contains("TFLOP/s"), "{out}");
    } else {
        assert!(err.starts_with("error: device error:") && !err.contains("panicked"), "{err}");
    }
    let (ok, _, err) = run(&["bench", "--device", "gpu7"]);
    assert!(!ok && err.contains("not a device"), "{err}");
}
