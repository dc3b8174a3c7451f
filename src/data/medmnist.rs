//! 2D MedMNIST `.npz` files (ChestMNIST and its siblings, at 28, 64, 128 or 224 pixels).
//!
//! An `.npz` is a zip of `.npy` arrays: `{train,val,test}_images` (N, H, W) or (N, H, W, C) uint8
//! and `{train,val,test}_labels` (N, L) uint8. Arrays are read with our own `.npy` parser
//! ([`super::npy`]) over the `zip` crate. Pixels stay uint8 and are decoded per image: small
//! images (up to [`MedMnistOptions::in_memory_max_pixels`] per image, 64x64x3 by default) are held
//! in memory; larger ones are extracted once into an on-disk cache file and memory-mapped, so the
//! multi-GB 224-pixel files never sit decoded in RAM.

use super::transform::{self, Grey};
use super::{Augment, Dataset, Preprocess, FINDINGS};
use crate::error::{Error, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The three splits of a MedMNIST file, in order.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// How a MedMNIST file is opened.
#[derive(Debug, Clone)]
pub struct MedMnistOptions {
    /// Expected label width: 14 for ChestMNIST (the default, checked to be 0/1); other MedMNIST
    /// sets need their own width (e.g. 1 for PneumoniaMNIST), which the caller must ask for.
    pub label_count: usize,
    /// Images with more pixels (H*W*C) than this are extracted to an on-disk cache and
    /// memory-mapped instead of being read into memory.
    pub in_memory_max_pixels: usize,
    /// Where extracted arrays go (default: `<cache_dir()>/npz`).
    pub cache_dir: Option<PathBuf>,
}

impl Default for MedMnistOptions {
    fn default() -> Self {
        MedMnistOptions { label_count: FINDINGS.len(), in_memory_max_pixels: 64 * 64 * 3, cache_dir: None }
    }
}

enum Pixels {
    Memory(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl Pixels {
    fn bytes(&self) -> &[u8] {
        match self {
            Pixels::Memory(v) => v,
            Pixels::Mapped(m) => m,
        }
    }
}

/// One split of a MedMNIST `.npz` file as a [`Dataset`].
pub struct MedMnist {
    path: PathBuf,
    split: String,
    len: usize,
    height: usize,
    width: usize,
    channels: usize,
    pixels: Arc<Pixels>,
    label_count: usize,
    labels: Vec<f32>,
    ids: Vec<String>,
    identity: String,
}

impl std::fmt::Debug for MedMnist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MedMnist")
            .field("path", &self.path)
            .field("split", &self.split)
            .field("len", &self.len)
            .field("shape", &(self.height, self.width, self.channels))
            .finish()
    }
}

fn location(path: &Path, key: &str) -> String {
    format!("{} [{key}]", path.display())
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<File>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    zip::ZipArchive::new(f).map_err(|e| Error::data(path.display(), format!("not a valid .npz (zip) file: {e}")))
}

/// The array names (without `.npy`) in an `.npz` file.
pub fn npz_keys(path: &Path) -> Result<Vec<String>> {
    let zip = open_zip(path)?;
    let mut keys: Vec<String> =
        zip.file_names().filter_map(|n| n.ok()).map(|n| n.trim_end_matches(".npy").to_string()).collect();
    keys.sort();
    Ok(keys)
}

/// Opens array `key` of an open npz, parses and checks its header (uint8, C order).
fn open_array<'a>(
    zip: &'a mut zip::ZipArchive<File>,
    path: &Path,
    key: &str,
) -> Result<(super::npy::NpyHeader, zip::read::ZipFile<'a, File>)> {
    let names: Vec<String> =
        zip.file_names().filter_map(|n| n.ok()).map(|n| n.trim_end_matches(".npy").to_string()).collect();
    let member = format!("{key}.npy");
    let name = if zip.index_for_name(&member).is_some() {
        member
    } else if zip.index_for_name(key).is_some() {
        key.to_string()
    } else {
        let mut names = names;
        names.sort();
        return Err(Error::data(location(path, key), format!("missing array; the file has {names:?}")));
    };
    let mut entry = zip.by_name(&name).map_err(|e| Error::data(location(path, key), format!("cannot read: {e}")))?;
    let mut head = vec![0u8; super::npy::PREAMBLE];
    entry.read_exact(&mut head).map_err(|e| Error::data(location(path, key), format!("truncated .npy header: {e}")))?;
    let total = super::npy::header_len(&head).map_err(|e| Error::data(location(path, key), e))?;
    if total > 1 << 20 {
        return Err(Error::data(location(path, key), format!("implausible .npy header length {total}")));
    }
    if total > head.len() {
        let mut rest = vec![0u8; total - head.len()];
        entry
            .read_exact(&mut rest)
            .map_err(|e| Error::data(location(path, key), format!("truncated .npy header: {e}")))?;
        head.extend_from_slice(&rest);
    }
    let header = super::npy::parse_header(&head[..total]).map_err(|e| Error::data(location(path, key), e))?;
    if header.descr != "|u1" && header.descr != "u1" && header.descr != "<u1" {
        return Err(Error::data(location(path, key), format!("dtype {} is not uint8 (|u1)", header.descr)));
    }
    if header.fortran_order {
        return Err(Error::data(location(path, key), "fortran_order arrays are not supported"));
    }
    Ok((header, entry))
}

fn read_exact_data(entry: &mut impl Read, n: usize, path: &Path, key: &str) -> Result<Vec<u8>> {
    let mut data = vec![0u8; n];
    entry.read_exact(&mut data).map_err(|e| {
        Error::data(location(path, key), format!("truncated or corrupt array data ({n} bytes expected): {e}"))
    })?;
    Ok(data)
}

impl MedMnist {
    /// Opens split `split` (`train`, `val` or `test`) of the npz at `path`.
    pub fn open(path: &Path, split: &str, options: &MedMnistOptions) -> Result<MedMnist> {
        if !SPLITS.contains(&split) {
            return Err(Error::InvalidArgument {
                op: "MedMnist::open",
                detail: format!("split must be one of {SPLITS:?}, got {split:?}"),
            });
        }
        let mut zip = open_zip(path)?;
        // Labels first: small, and they fix N.
        let lkey = format!("{split}_labels");
        let (lh, mut lentry) = open_array(&mut zip, path, &lkey)?;
        let (n, width) = match lh.shape.as_slice() {
            [n, l] => (*n, *l),
            [n] => (*n, 1),
            s => return Err(Error::data(location(path, &lkey), format!("labels must be (N, L), got shape {s:?}"))),
        };
        if width != options.label_count {
            return Err(Error::data(
                location(path, &lkey),
                format!(
                    "labels have width {width}, expected {} (cxr needs the 14 ChestX-ray14 findings; other MedMNIST sets must set label_count)",
                    options.label_count
                ),
            ));
        }
        let raw_labels = read_exact_data(&mut lentry, n * width, path, &lkey)?;
        drop(lentry);
        if width == FINDINGS.len() {
            if let Some(pos) = raw_labels.iter().position(|&v| v > 1) {
                return Err(Error::data(
                    location(path, &lkey),
                    format!("row {}: label {} is {}, expected 0 or 1", pos / width, pos % width, raw_labels[pos]),
                ));
            }
        }
        let labels: Vec<f32> = raw_labels.iter().map(|&v| v as f32).collect();

        let ikey = format!("{split}_images");
        let (ih, mut ientry) = open_array(&mut zip, path, &ikey)?;
        let (ni, h, w, c) = match ih.shape.as_slice() {
            [n, h, w] => (*n, *h, *w, 1),
            [n, h, w, c] if *c == 1 || *c == 3 => (*n, *h, *w, *c),
            s => {
                return Err(Error::data(
                    location(path, &ikey),
                    format!("images must be (N, H, W) or (N, H, W, 1|3), got shape {s:?}"),
                ))
            }
        };
        if ni != n {
            return Err(Error::data(
                location(path, &ikey),
                format!("shape mismatch: {ni} images but {lkey} has {n} rows"),
            ));
        }
        if h == 0 || w == 0 {
            return Err(Error::data(location(path, &ikey), format!("empty image shape {:?}", ih.shape)));
        }
        let per_image = h * w * c;
        let total = n * per_image;
        let pixels = if per_image <= options.in_memory_max_pixels {
            Pixels::Memory(read_exact_data(&mut ientry, total, path, &ikey)?)
        } else {
            Pixels::Mapped(extract_to_cache(&mut ientry, total, path, &ikey, options)?)
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let identity = format!("medmnist:{}:{}:{}", canon.display(), meta.len(), split);
        Ok(MedMnist {
            path: path.to_path_buf(),
            split: split.to_string(),
            len: n,
            height: h,
            width: w,
            channels: c,
            pixels: Arc::new(pixels),
            label_count: width,
            labels,
            ids: (0..n).map(|i| format!("{split}:{i}")).collect(),
            identity,
        })
    }

    /// Opens the train, val and test splits.
    pub fn open_splits(path: &Path, options: &MedMnistOptions) -> Result<[MedMnist; 3]> {
        Ok([
            MedMnist::open(path, "train", options)?,
            MedMnist::open(path, "val", options)?,
            MedMnist::open(path, "test", options)?,
        ])
    }

    /// The split this dataset reads.
    pub fn split(&self) -> &str {
        &self.split
    }
    /// (height, width, channels) of every image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.height, self.width, self.channels)
    }
    /// True when the pixels are memory-mapped from the on-disk cache.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.pixels, Pixels::Mapped(_))
    }
    /// The raw uint8 pixels of image `index` (H x W x C).
    pub fn raw(&self, index: usize) -> &[u8] {
        let per = self.height * self.width * self.channels;
        &self.pixels.bytes()[index * per..(index + 1) * per]
    }
    /// Image `index` decoded to grey in [0, 1] (RGB by luminance).
    pub fn grey(&self, index: usize) -> Grey {
        let raw = self.raw(index);
        if self.channels == 1 {
            Grey::from_u8(self.width, self.height, raw)
        } else {
            let data = raw
                .chunks_exact(3)
                .map(|p| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0)
                .collect();
            Grey { width: self.width, height: self.height, data }
        }
    }
}

/// Streams `total` bytes of an array into `<cache>/<stem>-<len>-<mtime>-<key>.u8` (once) and maps it.
fn extract_to_cache(
    entry: &mut impl Read,
    total: usize,
    path: &Path,
    key: &str,
    options: &MedMnistOptions,
) -> Result<memmap2::Mmap> {
    let dir = options.cache_dir.clone().unwrap_or_else(|| super::download::cache_dir().join("npz"));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let target = dir.join(format!("{stem}-{}-{mtime}-{key}.u8", meta.len()));
    let ok = std::fs::metadata(&target).map(|m| m.len() == total as u64).unwrap_or(false);
    if !ok {
        let tmp = target.with_extension(format!("u8.tmp-{}", std::process::id()));
        let result = (|| -> Result<()> {
            let mut f = std::io::BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
            let copied = std::io::copy(&mut entry.take(total as u64), &mut f)
                .map_err(|e| Error::data(location(path, key), format!("truncated or corrupt array data: {e}")))?;
            if copied != total as u64 {
                return Err(Error::data(
                    location(path, key),
                    format!("truncated array data: {copied} of {total} bytes"),
                ));
            }
            f.flush().map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
    }
    let f = File::open(&target).map_err(|e| Error::io(&target, e))?;
    // SAFETY: the cache file is ours, written once and renamed into place; nobody truncates it
    // while mapped (a concurrent rewrite renames a new inode over it).
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(&target, e))
}

impl Dataset for MedMnist {
    fn len(&self) -> usize {
        self.len
    }
    fn labels(&self, index: usize) -> &[f32] {
        &self.labels[index * self.label_count..(index + 1) * self.label_count]
    }
    fn patient(&self, _index: usize) -> Option<&str> {
        None
    }
    fn image_id(&self, index: usize) -> &str {
        &self.ids[index]
    }
    fn image(&self, index: usize, preprocess: &Preprocess, augment: Option<(&Augment, u64)>) -> Result<Vec<f32>> {
        if index >= self.len {
            return Err(Error::data(
                format!("{} [{}]", self.path.display(), self.split),
                format!("index {index} out of range ({} images)", self.len),
            ));
        }
        transform::preprocess(&self.grey(index), preprocess, augment)
    }
    fn cache_key(&self) -> Option<String> {
        Some(self.identity.clone())
    }
}
