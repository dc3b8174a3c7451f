//! Checkpoints: a model's parameters and buffers in safetensors, with everything needed to use
//! it again in the header's `__metadata__` under the key `cxr` (JSON): architecture, input
//! channels and size, normalisation, label names, decision thresholds, pos_weight, the training
//! configuration, epoch/step and validation metrics. Written atomically.

use super::atomic::write_atomic;
use super::safetensors::{serialize, OutTensor, WeightFile};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::tensor::DType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The metadata key holding [`CheckpointMeta`] as JSON.
pub const META_KEY: &str = "cxr";

/// What a checkpoint says about its model beyond the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CheckpointMeta {
    /// Metadata layout version (1).
    pub format: u32,
    /// Architecture name (`resnet18`, `densenet121`, `mlp`, ...).
    pub architecture: String,
    pub in_channels: usize,
    pub num_classes: usize,
    /// Side of the square input the model was trained at, if fixed.
    #[serde(default)]
    pub input_size: Option<usize>,
    /// Input normalisation as the data pipeline names it.
    #[serde(default)]
    pub normalization: Option<String>,
    /// Finding names, in output order.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Per-class decision thresholds.
    #[serde(default)]
    pub thresholds: Option<Vec<f32>>,
    /// Per-class positive weights used by the loss.
    #[serde(default)]
    pub pos_weight: Option<Vec<f32>>,
    /// The resolved training configuration (free-form).
    #[serde(default)]
    pub training: Option<serde_json::Value>,
    #[serde(default)]
    pub epoch: Option<u64>,
    #[serde(default)]
    pub step: Option<u64>,
    /// Validation metrics by name.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// Writes `model`'s tensors (as `dtype`) and `meta` to `path`, atomically.
pub fn save_checkpoint(path: &Path, model: &dyn Module, meta: &CheckpointMeta, dtype: DType) -> Result<()> {
    let mut tensors = Vec::new();
    for t in model.named_tensors() {
        let values = t.tensor.to_vec()?;
        tensors.push(OutTensor {
            name: t.name,
            dtype,
            shape: t.tensor.dims().to_vec(),
            bytes: dtype.encode_le(&values),
        });
    }
    let json = serde_json::to_string(meta).map_err(|e| Error::format(path, format!("cannot encode metadata: {e}")))?;
    let bytes = serialize(&tensors, HashMap::from([(META_KEY.to_string(), json)]), path)?;
    write_atomic(path, &bytes)
}

/// Opens a checkpoint and parses its metadata. Errors name the file when the metadata is missing
/// or malformed.
pub fn load_checkpoint(path: &Path) -> Result<(WeightFile, CheckpointMeta)> {
    let file = WeightFile::open(path)?;
    let meta = read_meta(&file)?;
    Ok((file, meta))
}

/// Parses the cxr metadata of an open weight file.
pub fn read_meta(file: &WeightFile) -> Result<CheckpointMeta> {
    let json = file.metadata().get(META_KEY).ok_or_else(|| {
        Error::format(file.path(), "no cxr metadata: a plain weight file, not a cxr checkpoint (convert or train one)")
    })?;
    serde_json::from_str(json).map_err(|e| Error::format(file.path(), format!("malformed cxr metadata: {e}")))
}
