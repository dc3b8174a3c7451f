//! Image files on disk with labels known up front: what the NIH and generic CSV sources produce.

use super::transform;
use super::{Augment, Dataset, LesionBox, Preprocess, FINDINGS};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One labelled image file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    /// The image's name (file name as listed).
    pub id: String,
    pub path: PathBuf,
    /// 14 labels in [`FINDINGS`] order.
    pub labels: [f32; 14],
    pub patient: Option<String>,
    /// View position (PA/AP) when known.
    pub view: Option<String>,
}

/// A dataset of image files.
#[derive(Debug, Clone)]
pub struct FileDataset {
    identity: String,
    records: Vec<FileRecord>,
    labels: Vec<f32>,
    boxes: Vec<Vec<LesionBox>>,
    box_size: (usize, usize),
}

impl FileDataset {
    /// A dataset of `records`; `identity` names the source (used in cache keys).
    pub fn new(identity: impl Into<String>, records: Vec<FileRecord>) -> FileDataset {
        let labels = records.iter().flat_map(|r| r.labels).collect();
        let boxes = vec![Vec::new(); records.len()];
        FileDataset { identity: identity.into(), records, labels, boxes, box_size: (0, 0) }
    }
    /// Attaches lesion boxes by image id (in `size` pixel coordinates). Returns how many matched.
    pub fn set_boxes(&mut self, by_id: &HashMap<String, Vec<LesionBox>>, size: (usize, usize)) -> usize {
        let mut n = 0;
        for (i, r) in self.records.iter().enumerate() {
            if let Some(b) = by_id.get(&r.id) {
                self.boxes[i] = b.clone();
                n += b.len();
            }
        }
        self.box_size = size;
        n
    }
    /// The records.
    pub fn records(&self) -> &[FileRecord] {
        &self.records
    }
    /// The file of image `index`.
    pub fn path(&self, index: usize) -> &Path {
        &self.records[index].path
    }
    /// The view position of image `index`.
    pub fn view(&self, index: usize) -> Option<&str> {
        self.records[index].view.as_deref()
    }
}

impl Dataset for FileDataset {
    fn len(&self) -> usize {
        self.records.len()
    }
    fn labels(&self, index: usize) -> &[f32] {
        &self.labels[index * FINDINGS.len()..(index + 1) * FINDINGS.len()]
    }
    fn patient(&self, index: usize) -> Option<&str> {
        self.records[index].patient.as_deref()
    }
    fn image_id(&self, index: usize) -> &str {
        &self.records[index].id
    }
    fn image(&self, index: usize, preprocess: &Preprocess, augment: Option<(&Augment, u64)>) -> Result<Vec<f32>> {
        let r = self.records.get(index).ok_or_else(|| {
            Error::data(&self.identity, format!("index {index} out of range ({})", self.records.len()))
        })?;
        transform::check_preprocess(preprocess)?;
        let img = transform::load_image(&r.path)?;
        transform::preprocess(&img, preprocess, augment)
    }
    fn boxes(&self, index: usize) -> (&[LesionBox], (usize, usize)) {
        (&self.boxes[index], self.box_size)
    }
    fn cache_key(&self) -> Option<String> {
        Some(self.identity.clone())
    }
    fn image_path(&self, index: usize) -> Option<&Path> {
        Some(&self.records[index].path)
    }
}

/// Walks `root` once and maps every image file name (`.png`, `.jpg`, `.jpeg`) to its path. When a
/// name occurs twice the first in sorted walk order wins.
pub fn index_images(root: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut map = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                let lower = name.to_ascii_lowercase();
                if lower.ends_with(".png") || lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
                    map.entry(name.to_string()).or_insert(p);
                }
            }
        }
    }
    Ok(map)
}

/// A file identity for cache keys: canonical path, size and modification time.
pub fn file_identity(path: &Path) -> String {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(path).ok();
    let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{}:{len}:{mtime}", canon.display())
}

/// Formats "N images are missing, e.g. a, b, c" for a missing-file error or warning.
pub fn missing_summary(missing: &[String], what: &str) -> String {
    let first: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
    format!(
        "{} listed image{} not found under {what} (first: {}){}",
        missing.len(),
        if missing.len() == 1 { " is" } else { "s are" },
        first.join(", "),
        if missing.len() > first.len() { ", ..." } else { "" }
    )
}
