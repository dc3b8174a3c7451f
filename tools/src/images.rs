//! Image inputs shared by `tools predict` and `tools gradcam`: files and folders on the command
//! line, decoded to grey.

use anyhow::{bail, Context, Result};
use cxr::data::transform::{load_image, Grey};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands folders to their PNG/JPEG files (sorted by name, not recursive); files are kept as
/// given, whatever their extension (a bad one fails to decode with its name).
pub fn collect(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading folder {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if files.is_empty() {
                bail!("{}: no PNG or JPEG images in this folder", input.display());
            }
            files.sort();
            out.extend(files);
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            bail!("{}: no such file or folder", input.display());
        }
    }
    Ok(out)
}

/// Decodes every file (PNG/JPEG, 8 or 16 bit, grey or RGB); the first failure is the error.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Grey>> {
    paths.iter().map(|p| Ok(load_image(p)?)).collect()
}

/// A short name for an image in tables and output file names.
pub fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into())
}

/// A finding name usable in a file name.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
