//! Batches for training and evaluation.
//!
//! A [`Loader`] walks a dataset once per epoch, in order or shuffled by (seed, epoch), and yields
//! [`Batch`]es. Images of a batch are decoded in parallel on rayon's pool; with
//! [`LoaderOptions::prefetch`] > 0 a background thread prepares the next batches (bounded) while
//! the current one trains. Augmentation of image `i` in epoch `e` uses the seed
//! [`sample_seed`]`(seed, e, i)`, so a run reproduces exactly whatever the prefetch or thread
//! count.
//!
//! With [`LoaderOptions::cache_dir`], the resized and center-cropped (pre-augmentation,
//! pre-normalisation) image is stored as uint8 in `<cache_dir>/<source key>-s<size>/`, so later
//! epochs skip decoding. Cached pixels are quantised to uint8 (16-bit sources lose precision);
//! the first epoch already uses the quantised pixels, so every epoch sees the same input.

use super::transform::{self, Grey};
use super::{Augment, Dataset, Normalization, Preprocess};
use crate::error::{Error, Result};
use crate::tensor::init::Rng;
use crate::Tensor;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// How a [`Loader`] walks its dataset.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    /// Shuffle per (seed, epoch); otherwise dataset order.
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    pub seed: u64,
    /// Augmentation (training); `None` for evaluation.
    pub augment: Option<Augment>,
    /// Batches prepared ahead on a background thread (0: prepare on demand).
    pub prefetch: usize,
    /// Skip images that fail to load (reported in [`Batch::skipped`]) instead of failing.
    pub skip_corrupt: bool,
    /// On-disk cache of resized uint8 images.
    pub cache_dir: Option<PathBuf>,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 32,
            shuffle: false,
            drop_last: false,
            seed: 0,
            augment: None,
            prefetch: 1,
            skip_corrupt: false,
            cache_dir: None,
        }
    }
}

/// An image the loader skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub index: usize,
    pub image: String,
    pub error: String,
}

/// One batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[N, C, S, S]`.
    pub images: Tensor,
    /// `[N, L]` (L = 14 for ChestX-ray14 sources).
    pub labels: Tensor,
    /// Dataset indices of the N images, in batch order.
    pub indices: Vec<usize>,
    /// Images of this batch skipped as corrupt (only with `skip_corrupt`).
    pub skipped: Vec<Skipped>,
}

struct RawBatch {
    images: Vec<f32>,
    labels: Vec<f32>,
    label_width: usize,
    indices: Vec<usize>,
    skipped: Vec<Skipped>,
}

/// SplitMix-style mixing of two values.
fn mix(a: u64, b: u64) -> u64 {
    let mut r = Rng::new(a ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next_u64()
}

/// The augmentation seed of dataset index `index` in `epoch` for loader seed `seed`.
pub fn sample_seed(seed: u64, epoch: u64, index: usize) -> u64 {
    mix(mix(seed, epoch.wrapping_add(1)), index as u64)
}

/// The on-disk cache of resized uint8 images for one source and size.
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    size: usize,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl ImageCache {
    /// The cache for `dataset` at `size` under `root`. The dataset must have a
    /// [`Dataset::cache_key`].
    pub fn new(root: &Path, dataset: &dyn Dataset, size: usize) -> Result<ImageCache> {
        let key = dataset.cache_key().ok_or_else(|| Error::InvalidArgument {
            op: "loader cache",
            detail: "this dataset has no cache key; it cannot be cached".into(),
        })?;
        let dir = root.join(format!("{:016x}-s{size}", fnv1a(&key)));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let about = dir.join("source.txt");
        if !about.exists() {
            std::fs::write(&about, format!("{key}\nsize {size}\n")).map_err(|e| Error::io(&about, e))?;
        }
        Ok(ImageCache { dir, size })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &str) -> PathBuf {
        let safe: String =
            id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
        self.dir.join(format!("{safe}.u8"))
    }

    /// The resized image `index` of `dataset`: from the cache, or decoded and stored.
    pub fn get(&self, dataset: &dyn Dataset, index: usize) -> Result<Grey> {
        let s = self.size;
        let path = self.file(dataset.image_id(index));
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.len() == s * s {
                return Ok(Grey::from_u8(s, s, &bytes));
            }
        }
        let base = Preprocess { channels: 1, size: s, normalization: Normalization::UnitRange };
        let data = dataset.image(index, &base, None)?;
        let bytes = Grey { width: s, height: s, data }.to_u8();
        let tmp =
            path.with_extension(format!("tmp-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
        let written = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
        Ok(Grey::from_u8(s, s, &bytes))
    }
}

/// Yields batches of a dataset, epoch by epoch.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    preprocess: Preprocess,
    options: LoaderOptions,
    cache: Option<Arc<ImageCache>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("images", &self.dataset.len())
            .field("preprocess", &self.preprocess)
            .field("options", &self.options)
            .finish()
    }
}

struct Shared {
    dataset: Arc<dyn Dataset>,
    preprocess: Preprocess,
    options: LoaderOptions,
    cache: Option<Arc<ImageCache>>,
}

impl Shared {
    fn load(&self, index: usize, epoch: u64) -> Result<Vec<f32>> {
        let aug = self.options.augment.as_ref().map(|a| (a, sample_seed(self.options.seed, epoch, index)));
        match &self.cache {
            Some(cache) => transform::finish(&cache.get(self.dataset.as_ref(), index)?, &self.preprocess, aug),
            None => self.dataset.image(index, &self.preprocess, aug),
        }
    }

    fn batch(&self, indices: &[usize], epoch: u64) -> Result<RawBatch> {
        let results: Vec<Result<Vec<f32>>> = indices.par_iter().map(|&i| self.load(i, epoch)).collect();
        let per = self.preprocess.channels * self.preprocess.size * self.preprocess.size;
        let label_width = indices.first().map(|&i| self.dataset.labels(i).len()).unwrap_or(0);
        let mut raw = RawBatch {
            images: Vec::with_capacity(per * indices.len()),
            labels: Vec::with_capacity(label_width * indices.len()),
            label_width,
            indices: Vec::with_capacity(indices.len()),
            skipped: Vec::new(),
        };
        for (&i, r) in indices.iter().zip(results) {
            match r {
                Ok(img) => {
                    raw.images.extend_from_slice(&img);
                    raw.labels.extend_from_slice(self.dataset.labels(i));
                    raw.indices.push(i);
                }
                Err(e) if self.options.skip_corrupt => raw.skipped.push(Skipped {
                    index: i,
                    image: self.dataset.image_id(i).to_string(),
                    error: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(raw)
    }
}

impl Loader {
    /// A loader over `dataset` producing `preprocess`ed images.
    pub fn new(dataset: Arc<dyn Dataset>, preprocess: Preprocess, options: LoaderOptions) -> Result<Loader> {
        transform::check_preprocess(&preprocess)?;
        if options.batch_size == 0 {
            return Err(Error::InvalidArgument { op: "Loader::new", detail: "batch_size must be positive".into() });
        }
        let cache = match &options.cache_dir {
            Some(root) => Some(Arc::new(ImageCache::new(root, dataset.as_ref(), preprocess.size)?)),
            None => None,
        };
        Ok(Loader { dataset, preprocess, options, cache })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }
    /// The options.
    pub fn options(&self) -> &LoaderOptions {
        &self.options
    }

    /// Number of batches per epoch (before any skipping).
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.options.batch_size);
        if self.options.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the dataset.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.options.shuffle {
            let mut rng = Rng::new(mix(self.options.seed ^ 0x5348_5546_464C_4521, epoch));
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The batches of epoch `epoch`.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let order = self.order(epoch);
        let b = self.options.batch_size;
        let mut chunks: Vec<Vec<usize>> = order.chunks(b).map(<[usize]>::to_vec).collect();
        if self.options.drop_last && chunks.last().is_some_and(|c| c.len() < b) {
            chunks.pop();
        }
        let shared = Arc::new(Shared {
            dataset: self.dataset.clone(),
            preprocess: self.preprocess.clone(),
            options: self.options.clone(),
            cache: self.cache.clone(),
        });
        if self.options.prefetch == 0 {
            return Epoch {
                shape: self.shape(),
                inner: EpochInner::Sync { shared, chunks: chunks.into_iter(), epoch },
                done: false,
                carry: Vec::new(),
            };
        }
        let (tx, rx) = mpsc::sync_channel::<Result<RawBatch>>(self.options.prefetch - 1);
        let handle = std::thread::Builder::new()
            .name("cxr-loader".into())
            .spawn(move || {
                for c in chunks {
                    let r = shared.batch(&c, epoch);
                    let stop = r.is_err();
                    if tx.send(r).is_err() || stop {
                        break;
                    }
                }
            })
            .expect("spawn the loader thread");
        Epoch {
            shape: self.shape(),
            inner: EpochInner::Prefetch { rx: Some(rx), handle: Some(handle) },
            done: false,
            carry: Vec::new(),
        }
    }

    fn shape(&self) -> (usize, usize) {
        (self.preprocess.channels, self.preprocess.size)
    }
}

enum EpochInner {
    Sync { shared: Arc<Shared>, chunks: std::vec::IntoIter<Vec<usize>>, epoch: u64 },
    Prefetch { rx: Option<mpsc::Receiver<Result<RawBatch>>>, handle: Option<std::thread::JoinHandle<()>> },
}

/// The batches of one epoch (an iterator). Stops after the first error.
pub struct Epoch {
    shape: (usize, usize),
    inner: EpochInner,
    done: bool,
    /// Skips of batches that had no image left, reported with the next batch.
    carry: Vec<Skipped>,
}

impl Epoch {
    fn finish(&self, raw: RawBatch) -> Result<Batch> {
        let n = raw.indices.len();
        let (c, s) = self.shape;
        Ok(Batch {
            images: Tensor::from_vec(raw.images, [n, c, s, s])?,
            labels: Tensor::from_vec(raw.labels, [n, raw.label_width])?,
            indices: raw.indices,
            skipped: raw.skipped,
        })
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        loop {
            if self.done {
                return None;
            }
            let raw = match &mut self.inner {
                EpochInner::Sync { shared, chunks, epoch } => match chunks.next() {
                    Some(c) => shared.batch(&c, *epoch),
                    None => {
                        self.done = true;
                        return None;
                    }
                },
                EpochInner::Prefetch { rx, .. } => match rx.as_ref().and_then(|r| r.recv().ok()) {
                    Some(r) => r,
                    None => {
                        self.done = true;
                        return None;
                    }
                },
            };
            match raw {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                // Every image of this batch was skipped: move on to the next batch.
                Ok(raw) if raw.indices.is_empty() => self.carry.extend(raw.skipped),
                Ok(mut raw) => {
                    if !self.carry.is_empty() {
                        let mut skipped = std::mem::take(&mut self.carry);
                        skipped.append(&mut raw.skipped);
                        raw.skipped = skipped;
                    }
                    return Some(self.finish(raw));
                }
            }
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        if let EpochInner::Prefetch { rx, handle } = &mut self.inner {
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}
