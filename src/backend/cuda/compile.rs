//! NVRTC: kernel source -> CUBIN for one architecture, with an on-disk cache keyed by source hash,
//! architecture and NVRTC version (compiling all kernels takes seconds; loading a CUBIN, ms).
//! Used by the GPU executor at first use, and by the compile check for every target arch.

use super::kernels;
use crate::error::{Error, Result};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use md5::{Digest, Md5};
use std::ffi::CString;
use std::path::PathBuf;

/// The architectures the kernels are checked for: Turing, Ampere (A100, consumer, Jetson Orin),
/// Ada and Hopper.
pub const TARGET_ARCHS: &[u32] = &[75, 80, 86, 87, 89, 90];

/// What one compilation produced.
#[derive(Debug)]
pub struct Compiled {
    /// CUBIN (or PTX with [`Output::Ptx`]).
    pub image: Vec<u8>,
    /// NVRTC's log (empty when clean).
    pub log: String,
}

/// What to ask NVRTC for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Cubin,
    Ptx,
}

/// Loads libnvrtc: from `CXR_NVRTC_DIR` first when set (the PyPI wheel the CI installs), else by
/// the system's library search. Errors say which library is missing.
pub fn ensure_nvrtc() -> Result<()> {
    if let Ok(dir) = std::env::var("CXR_NVRTC_DIR") {
        preload_from(&dir)?;
    }
    // SAFETY: only probes dlopen for the library names cudarc knows; no symbol is called.
    if unsafe { nvrtc_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Device("libnvrtc (the CUDA runtime compiler) was not found: install the CUDA toolkit or JetPack, or set CXR_NVRTC_DIR to a folder holding libnvrtc.so.13 and libnvrtc-builtins.so.13.x".into()))
    }
}

/// dlopens `dir/libnvrtc-builtins.so.*` and `dir/libnvrtc.so.*` once and keeps them loaded, so
/// the later dlopen calls by soname (cudarc's of libnvrtc, libnvrtc's of its builtins) find them
/// without LD_LIBRARY_PATH.
fn preload_from(dir: &str) -> Result<()> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let r = LOADED.get_or_init(|| {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("CXR_NVRTC_DIR={dir}: {e}"))?;
        let names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        let find = |prefix: &str| {
            names
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && !n.contains(".alt."))
                })
                .ok_or_else(|| format!("CXR_NVRTC_DIR={dir} holds no {prefix}*"))
        };
        for lib in [find("libnvrtc-builtins.so")?, find("libnvrtc.so")?] {
            // SAFETY: loading the vendor's libraries runs only their initialisers; the handles
            // are leaked on purpose so the libraries stay loaded for the process's life.
            let handle = unsafe { libloading::Library::new(lib) }.map_err(|e| format!("{}: {e}", lib.display()))?;
            std::mem::forget(handle);
        }
        Ok(())
    });
    r.clone().map_err(Error::Device)
}

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is loaded (ensure_nvrtc) and both pointers are valid for writes.
    let r = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    r.result().map_err(|e| Error::Device(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Compiles kernel file `file` for `sm_{arch}`. Any warning in the log is an error (the kernels
/// are kept warning-free), as is an unknown file.
pub fn compile(file: &str, arch: u32, output: Output) -> Result<Compiled> {
    ensure_nvrtc()?;
    let source = kernels::nvrtc_source(file).ok_or_else(|| Error::Device(format!("no kernel file {file}")))?;
    let fail = |what: &str, log: &str| Error::Device(format!("NVRTC {what} for {file} (sm_{arch}):\n{log}"));
    let src = CString::new(source).map_err(|_| fail("source has a NUL byte", ""))?;
    let name = CString::new(file).map_err(|_| fail("bad name", ""))?;
    let prog = nvrtc::create_program(&src, Some(&name)).map_err(|e| fail(&format!("create_program: {e:?}"), ""))?;
    let arch_opt = match output {
        Output::Cubin => format!("--gpu-architecture=sm_{arch}"),
        Output::Ptx => format!("--gpu-architecture=compute_{arch}"),
    };
    let options = [arch_opt.as_str(), "--std=c++17", "--restrict", "--extra-device-vectorization"];
    // SAFETY: prog was created above and is destroyed exactly once below.
    let compiled = unsafe { nvrtc::compile_program(prog, &options) };
    // SAFETY: as above.
    let log = unsafe { nvrtc::get_program_log(prog) }.map(|l| c_chars_to_string(&l)).unwrap_or_default();
    let image = compiled.map_err(|e| fail(&format!("compile error {e:?}"), &log)).and_then(|_| {
        // SAFETY: prog compiled successfully.
        unsafe { image_of(prog, output) }.map_err(|e| fail(&e, &log))
    });
    // SAFETY: prog is live and not used after this.
    unsafe { nvrtc::destroy_program(prog) }.ok();
    let image = image?;
    if log.to_lowercase().contains("warning") {
        return Err(fail("warnings (warnings are errors)", &log));
    }
    Ok(Compiled { image, log })
}

fn c_chars_to_string(chars: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// # Safety
/// `prog` must be a successfully compiled, live program.
unsafe fn image_of(prog: nvrtc_sys::nvrtcProgram, output: Output) -> std::result::Result<Vec<u8>, String> {
    let mut size = 0usize;
    let r = match output {
        Output::Cubin => nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size),
        Output::Ptx => nvrtc_sys::nvrtcGetPTXSize(prog, &mut size),
    };
    r.result().map_err(|e| format!("image size: {e:?}"))?;
    let mut buf = vec![0u8; size];
    let r = match output {
        Output::Cubin => nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast()),
        Output::Ptx => nvrtc_sys::nvrtcGetPTX(prog, buf.as_mut_ptr().cast()),
    };
    r.result().map_err(|e| format!("image: {e:?}"))?;
    Ok(buf)
}

/// Where compiled kernels are cached: `$XDG_CACHE_HOME/cxr/kernels` (or ~/.cache/cxr/kernels).
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("cxr").join("kernels"))
}

/// The cache file of `file` for `arch` under NVRTC `version`: the key is the source's hash.
pub fn cache_path(dir: &std::path::Path, file: &str, arch: u32, version: (i32, i32)) -> Option<PathBuf> {
    let source = kernels::nvrtc_source(file)?;
    let hash = Md5::digest(source.as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let stem = file.trim_end_matches(".cu");
    Some(dir.join(format!("{stem}-sm{arch}-nvrtc{}.{}-{hex}.cubin", version.0, version.1)))
}

/// The CUBIN of `file` for `arch`, from the cache or compiled (and then cached; a cache that
/// cannot be written only costs a recompile next time).
pub fn cubin(file: &str, arch: u32) -> Result<Vec<u8>> {
    let version = nvrtc_version()?;
    let path = cache_dir().and_then(|d| cache_path(&d, file, arch, version));
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        return Ok(bytes);
    }
    let compiled = compile(file, arch, Output::Cubin)?;
    if let Some(p) = &path {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = crate::io::atomic::write_atomic(p, &compiled.image);
    }
    Ok(compiled.image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_names_file_arch_and_nvrtc_version() {
        let dir = std::path::Path::new("/c");
        let a = cache_path(dir, "matmul.cu", 86, (13, 0)).unwrap();
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("matmul-sm86-nvrtc13.0-") && name.ends_with(".cubin"), "{name}");
        assert_ne!(a, cache_path(dir, "matmul.cu", 90, (13, 0)).unwrap());
        assert_ne!(a, cache_path(dir, "matmul.cu", 86, (13, 1)).unwrap());
        // Different sources hash differently.
        let (x, y) =
            (cache_path(dir, "pool.cu", 86, (13, 0)).unwrap(), cache_path(dir, "norm.cu", 86, (13, 0)).unwrap());
        let hash = |p: &std::path::Path| p.to_str().unwrap().rsplit('-').next().unwrap().to_string();
        assert_ne!(hash(&x), hash(&y));
        assert!(cache_path(dir, "nope.cu", 86, (13, 0)).is_none());
    }
}
