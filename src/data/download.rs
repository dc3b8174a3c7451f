//! Downloads of the official MedMNIST files (Zenodo record 10519652), MD5-checked.
//!
//! Files go to [`cache_dir`] (`$CXR_CACHE`, else `~/.cache/cxr`) under `medmnist/`. A download is
//! written to a temporary file, checked against the MD5 the `medmnist` package publishes
//! (v3.0.2 `INFO`), and only then renamed into place. Offline, the error says where to put the
//! file by hand. The base URL can be overridden with `$CXR_MEDMNIST_URL` or
//! [`DownloadOptions::base_url`] (tests serve files from 127.0.0.1).

use crate::error::{Error, Result};
use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The official MedMNIST v3 files this crate knows, with their published MD5 and label width.
/// From `medmnist/info.py` (v3.0.2): `(name, md5, label_count)`.
pub const MEDMNIST_FILES: [(&str, &str, usize); 8] = [
    ("chestmnist", "02c8a6516a18b556561a56cbdd36c4a8", 14),
    ("chestmnist_64", "9de6cd0b934ebb5b7426cfba5efbae16", 14),
    ("chestmnist_128", "db107e5590b27930b62dbaf558aebee3", 14),
    ("chestmnist_224", "45bd33e6f06c3e8cdb481c74a89152aa", 14),
    ("pneumoniamnist", "28209eda62fecd6e6a2d98b1501bb15f", 1),
    ("pneumoniamnist_64", "8f4eceb4ccffa70c672198ea285246c6", 1),
    ("pneumoniamnist_128", "05b46931834c231683c68f40c47b2971", 1),
    ("pneumoniamnist_224", "d6a3c71de1b945ea11211b03746c1fe1", 1),
];

/// The default download base.
pub const ZENODO_BASE: &str = "https://zenodo.org/records/10519652/files";

/// The cache root: `$CXR_CACHE`, else `$HOME/.cache/cxr`, else `./.cxr-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CXR_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("cxr"),
        None => PathBuf::from(".cxr-cache"),
    }
}

/// The known file `name` (`chestmnist`, `chestmnist_224`, `pneumoniamnist_64`, ...).
pub fn medmnist_info(name: &str) -> Option<(&'static str, &'static str, usize)> {
    MEDMNIST_FILES.iter().copied().find(|(n, _, _)| *n == name)
}

/// Where downloads come from and go to.
#[derive(Debug, Clone, Default)]
pub struct DownloadOptions {
    /// Base URL (`{base}/{name}.npz?download=1`); default `$CXR_MEDMNIST_URL` or Zenodo.
    pub base_url: Option<String>,
    /// Target folder; default `<cache_dir()>/medmnist`.
    pub dir: Option<PathBuf>,
    /// Expected MD5 overriding the table (for tests and unlisted files).
    pub md5: Option<String>,
}

/// MD5 of a file, lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The local path of MedMNIST file `name`, downloading it when absent. An existing file is
/// trusted (it was checked when downloaded, or placed by hand).
pub fn medmnist(name: &str, options: &DownloadOptions) -> Result<PathBuf> {
    let expected = match (&options.md5, medmnist_info(name)) {
        (Some(m), _) => m.to_ascii_lowercase(),
        (None, Some((_, m, _))) => m.to_string(),
        (None, None) => {
            return Err(Error::InvalidArgument {
                op: "download",
                detail: format!(
                    "unknown MedMNIST file {name:?}; known: {}",
                    MEDMNIST_FILES.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
                ),
            })
        }
    };
    let dir = options.dir.clone().unwrap_or_else(|| cache_dir().join("medmnist"));
    let target = dir.join(format!("{name}.npz"));
    if target.is_file() {
        return Ok(target);
    }
    let base = options
        .base_url
        .clone()
        .or_else(|| std::env::var("CXR_MEDMNIST_URL").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| ZENODO_BASE.to_string());
    let url = format!("{}/{name}.npz?download=1", base.trim_end_matches('/'));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!(".{name}.npz.part-{}", std::process::id()));
    let result = fetch(&url, &tmp, &target, &expected);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
    Ok(target)
}

fn fetch(url: &str, tmp: &Path, target: &Path, expected: &str) -> Result<()> {
    let by_hand = || {
        format!(
            "download it by hand from {} and put it at {} (MD5 {expected})",
            url.replace("?download=1", ""),
            target.display()
        )
    };
    let agent =
        ureq::Agent::config_builder().timeout_connect(Some(std::time::Duration::from_secs(20))).build().new_agent();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| Error::data(url, format!("cannot download ({e}); offline? {}", by_hand())))?;
    let mut reader = response.into_body().into_reader();
    let mut file = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?);
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::data(url, format!("download interrupted ({e}); {}", by_hand())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| Error::io(tmp, e))?;
    }
    file.flush().map_err(|e| Error::io(tmp, e))?;
    drop(file);
    let got = hex(&h.finalize());
    if got != expected {
        return Err(Error::data(
            url,
            format!("MD5 mismatch: got {got}, expected {expected}; the download was discarded ({})", by_hand()),
        ));
    }
    Ok(())
}
