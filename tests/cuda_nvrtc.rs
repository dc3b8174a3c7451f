//! Compile check of every CUDA kernel without a GPU: each kernels/*.cu through NVRTC to CUBIN
//! for sm_75, sm_80, sm_86, sm_87, sm_89 and sm_90, warnings as errors; then PTX through `ptxas
//! -v` (from the PyPI wheel nvidia-cuda-nvcc) for each architecture, printing registers, shared
//! memory and spills per kernel and flagging any kernel that spills.
//!
//! NVRTC comes from `CXR_NVRTC_DIR` (scripts/cuda_toolchain.sh installs the PyPI wheel
//! nvidia-cuda-nvrtc and prints the export) or the system. Without it the test prints why it
//! skipped, unless `CXR_REQUIRE_NVRTC=1` (set by .ci/run), where a missing library fails.

use cxr::backend::cuda::compile::{compile, ensure_nvrtc, Output, TARGET_ARCHS};
use cxr::backend::cuda::kernels::{KERNELS, SOURCES};
use std::process::Command;

fn nvrtc_or_skip(what: &str) -> bool {
    match ensure_nvrtc() {
        Ok(()) => true,
        Err(e) if std::env::var("CXR_REQUIRE_NVRTC").is_ok_and(|v| v == "1") => panic!("{what}: {e}"),
        Err(e) => {
            eprintln!("SKIP {what}: {e}. Run `eval \"$(scripts/cuda_toolchain.sh)\"` first.");
            false
        }
    }
}

/// Runs `f` over every (file, arch) on two threads (NVRTC calls are independent).
fn for_each_target<T: Send>(f: impl Fn(&str, u32) -> T + Sync) -> Vec<(String, u32, T)> {
    let jobs: Vec<(&str, u32)> =
        SOURCES.iter().flat_map(|(file, _)| TARGET_ARCHS.iter().map(move |&a| (*file, a))).collect();
    let half = jobs.len().div_ceil(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(half)
            .map(|chunk| {
                s.spawn(|| chunk.iter().map(|&(file, a)| (file.to_string(), a, f(file, a))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn every_kernel_compiles_to_cubin_for_every_target_arch_without_warnings() {
    if !nvrtc_or_skip("NVRTC compile check") {
        return;
    }
    let results = for_each_target(|file, arch| compile(file, arch, Output::Cubin).map(|c| c.image.len()));
    let failures: Vec<String> =
        results.iter().filter_map(|(f, a, r)| r.as_ref().err().map(|e| format!("{f} sm_{a}: {e}"))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (file, arch, size) in &results {
        let size = size.as_ref().unwrap();
        assert!(*size > 0, "{file} sm_{arch}: empty CUBIN");
    }
    eprintln!("{} CUBINs compiled ({} files x {} archs)", results.len(), SOURCES.len(), TARGET_ARCHS.len());
}

/// One kernel's resources as ptxas reports them.
#[derive(Debug, Default, Clone)]
struct Usage {
    registers: u32,
    shared: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Parses `ptxas -v` output: a "Compiling entry function 'X'" line, then "N bytes spill stores,
/// M bytes spill loads" and "Used R registers, ... S bytes smem".
fn parse_ptxas(text: &str) -> Vec<(String, Usage)> {
    let mut out: Vec<(String, Usage)> = Vec::new();
    let number_before = |line: &str, unit: &str| -> u32 {
        line.find(unit).and_then(|i| line[..i].split_whitespace().last()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    for line in text.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + 26..];
            out.push((rest[..rest.find('\'').unwrap_or(rest.len())].to_string(), Usage::default()));
        } else if let Some((_, u)) = out.last_mut() {
            if line.contains("spill stores") {
                u.spill_stores = number_before(line, "bytes spill stores");
                u.spill_loads = number_before(line, "bytes spill loads");
            }
            if line.contains("Used") && line.contains("registers") {
                u.registers = number_before(line, "registers");
                u.shared = number_before(line, "bytes smem");
            }
        }
    }
    out
}

#[test]
fn ptxas_reports_resources_and_every_kernel_entry_exists() {
    if !nvrtc_or_skip("ptxas resource report") {
        return;
    }
    let Ok(ptxas) = std::env::var("CXR_PTXAS") else {
        assert!(std::env::var("CXR_REQUIRE_NVRTC").map_or(true, |v| v != "1"), "CXR_PTXAS is not set");
        eprintln!("SKIP ptxas resource report: CXR_PTXAS is not set (scripts/cuda_toolchain.sh prints it)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("cxr-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results = for_each_target(|file, arch| -> Result<Vec<(String, Usage)>, String> {
        let ptx = compile(file, arch, Output::Ptx).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{file}.sm_{arch}.ptx"));
        std::fs::write(&path, &ptx.image[..ptx.image.iter().position(|&b| b == 0).unwrap_or(ptx.image.len())])
            .map_err(|e| e.to_string())?;
        let out = Command::new(&ptxas)
            .args(["-v", &format!("-arch=sm_{arch}"), "-o", "/dev/null"])
            .arg(&path)
            .output()
            .map_err(|e| format!("{ptxas}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!("ptxas failed:\n{text}"));
        }
        if text.to_lowercase().contains("warning") {
            return Err(format!("ptxas warnings:\n{text}"));
        }
        Ok(parse_ptxas(&text))
    });
    std::fs::remove_dir_all(&dir).ok();
    let failures: Vec<String> =
        results.iter().filter_map(|(f, a, r)| r.as_ref().err().map(|e| format!("{f} sm_{a}: {e}"))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut spills = Vec::new();
    eprintln!(
        "{:<34} {:>6} {:>5} {:>6} {:>6}  (registers, shared bytes, spill store/load bytes)",
        "kernel", "arch", "regs", "smem", "spill"
    );
    for (file, arch, r) in &results {
        let usage = r.as_ref().unwrap();
        for (kernel, u) in usage {
            eprintln!(
                "{kernel:<34} sm_{arch:<3} {:>5} {:>6} {:>3}/{:<3}",
                u.registers, u.shared, u.spill_stores, u.spill_loads
            );
            if u.spill_stores + u.spill_loads > 0 {
                spills.push(format!(
                    "{kernel} ({file}, sm_{arch}): {} bytes spill stores, {} bytes spill loads",
                    u.spill_stores, u.spill_loads
                ));
            }
        }
        for (kernel, kfile) in KERNELS {
            if kfile == file {
                assert!(usage.iter().any(|(k, _)| k == kernel), "{kernel} has no entry in {file} (sm_{arch})");
            }
        }
    }
    if spills.is_empty() {
        eprintln!("no kernel spills registers on any target architecture");
    } else {
        eprintln!("REGISTER SPILLS:\n{}", spills.join("\n"));
    }
}
