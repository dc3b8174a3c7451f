//! Chest X-ray datasets: where images and labels come from, how they are split without patient
//! leakage, and how they become batches.
//!
//! Every source implements [`Dataset`]: labels and patient ids are known up front (for splits,
//! class weights and statistics) while images are decoded lazily, one at a time, so even the full
//! NIH release (112,120 images) is never held decoded in memory.
//!
//! - Sources: [`medmnist`] (`.npz`, uint8 kept in memory or memory-mapped), [`nih`] (the NIH
//!   release folder), [`csv_source`] (`image,patient_id,<14 labels>,view`), [`phantom`]
//!   (synthetic, learnable), [`download`] (MD5-checked MedMNIST downloads);
//!   [`open_source`] picks one from a `--data` value and splits it.
//! - [`split`]: seeded patient-level splits, the leakage check, [`Subset`] and [`Concat`].
//! - [`transform`]: decode, resize + center crop, augmentation, normalisation.
//! - [`loader`]: shuffled, prefetched, parallel-decoded batches with an optional uint8 cache.
//! - [`stats`]: label statistics and the image integrity check behind `tools data`.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub mod csv_source;
pub mod download;
pub mod files;
pub mod loader;
pub mod medmnist;
pub mod nih;
pub mod npy;
pub mod phantom;
pub mod source;
pub mod split;
pub mod stats;
pub mod transform;

pub use csv_source::{CsvOptions, CsvSource};
pub use files::FileDataset;
pub use loader::{Batch, Loader, LoaderOptions};
pub use medmnist::{MedMnist, MedMnistOptions};
pub use nih::{Nih, NihOptions};
pub use phantom::Phantoms;
pub use source::{open_source, Source, SourceKind, SourceOptions};
pub use split::{check_leakage, patient_split, Concat, Fractions, Split, Subset};
pub use stats::Stats;

/// The 14 NIH ChestX-ray14 findings, in the order every label vector and model output uses
/// (ChestMNIST's order).
pub const FINDINGS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
];

/// How pixel values are scaled after decoding (to [0, 1] first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// [0, 1], as the ChestMNIST MLP lab does.
    UnitRange,
    /// ImageNet mean/std per channel (grey replicated to 3 channels for torchvision weights).
    ImageNet,
    /// TorchXRayVision's [-1024, 1024], single channel.
    XrayVision,
}

/// What turns a decoded image into model input. Stored in checkpoints so inference repeats it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// 1 (grey) or 3 (grey replicated).
    pub channels: usize,
    /// Output side: the shorter side is resized to this, then center-cropped square.
    pub size: usize,
    pub normalization: Normalization,
}

/// Training-time augmentation, all seeded. Defaults are off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Augment {
    /// Random resized crop: fraction of the area kept, (min, max), e.g. (0.85, 1.0).
    pub crop_scale: Option<(f32, f32)>,
    /// Maximum absolute rotation in degrees.
    pub rotation_deg: f32,
    /// Horizontal flip with probability 0.5 (off by default: it moves the heart).
    pub hflip: bool,
    /// Maximum brightness shift (fraction of the range).
    pub brightness: f32,
    /// Maximum contrast change (fraction).
    pub contrast: f32,
}

/// A radiologist or synthetic lesion box in the image's own pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LesionBox {
    /// Index into [`FINDINGS`].
    pub finding: usize,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// A source of labelled chest X-rays.
pub trait Dataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// True when there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The 14 labels of image `index` (0.0 or 1.0, [`FINDINGS`] order).
    fn labels(&self, index: usize) -> &[f32];
    /// The patient of image `index`, when known.
    fn patient(&self, index: usize) -> Option<&str>;
    /// A name for image `index` (its file name, or `split:row` for arrays).
    fn image_id(&self, index: usize) -> &str;
    /// Decodes image `index` and returns it preprocessed as `channels x size x size` f32 values
    /// (row-major), with `augment` applied under `seed` when given. Errors name the file or row.
    fn image(&self, index: usize, preprocess: &Preprocess, augment: Option<(&Augment, u64)>) -> Result<Vec<f32>>;
    /// Lesion boxes of image `index`, in its original pixel coordinates, with that size.
    fn boxes(&self, _index: usize) -> (&[LesionBox], (usize, usize)) {
        (&[], (0, 0))
    }
    /// A stable identity of the source (file, size, modification time, split), used to key the
    /// loader's on-disk image cache; `None` when the source cannot be cached.
    fn cache_key(&self) -> Option<String> {
        None
    }
    /// The file image `index` is read from, when it is a file (for reports).
    fn image_path(&self, _index: usize) -> Option<&Path> {
        None
    }
}
