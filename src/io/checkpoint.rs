//! Checkpoints: a model's parameters and buffers in safetensors, with everything needed to use
//! it again in the header's `__metadata__` under the key `cxr` (JSON): architecture, input
//! channels and size, normalisation, label names, decision thresholds, pos_weight, the training
//! configuration, epoch/step and validation metrics. Written atomically.

use super::atomic::write_atomic;
use super::safetensors::{load_into, serialize, LoadOptions, OutTensor, WeightFile};
use crate::backend::Device;
use crate::data::transform::check_preprocess;
use crate::data::{Normalization, Preprocess};
use crate::error::{Error, Result};
use crate::models::{Architecture, Model};
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

impl CheckpointMeta {
    /// The preprocessing the model was trained with, so inference repeats it. `path` names the
    /// checkpoint in errors.
    pub fn preprocess(&self, path: &Path) -> Result<Preprocess> {
        let size = self.input_size.ok_or_else(|| Error::format(path, "metadata has no input_size"))?;
        let name = self.normalization.as_deref().ok_or_else(|| Error::format(path, "metadata has no normalization"))?;
        let normalization: Normalization = serde_json::from_value(serde_json::Value::String(name.to_string()))
            .map_err(|_| {
                Error::format(
                    path,
                    format!("unknown normalization {name:?} (expected unit-range, image-net or xray-vision)"),
                )
            })?;
        let preprocess = Preprocess { channels: self.in_channels, size, normalization };
        check_preprocess(&preprocess).map_err(|e| Error::format(path, e.to_string()))?;
        Ok(preprocess)
    }

    /// The checkpoint's label names, checked against the model's class count.
    pub fn label_names(&self, path: &Path) -> Result<Vec<String>> {
        if self.labels.len() != self.num_classes {
            return Err(Error::format(
                path,
                format!("metadata lists {} labels for a {}-class model", self.labels.len(), self.num_classes),
            ));
        }
        Ok(self.labels.clone())
    }
}

/// A model rebuilt from a checkpoint, in eval mode, with the metadata it was saved with.
pub struct LoadedModel {
    pub model: Box<dyn Model>,
    pub meta: CheckpointMeta,
    pub architecture: Architecture,
}

/// Opens a checkpoint, builds its architecture and loads every tensor strictly (weights borrowed
/// from the mapping where aligned). The model is returned in eval mode on `device`.
pub fn load_model(path: &Path, device: Device) -> Result<LoadedModel> {
    let (file, meta) = load_checkpoint(path)?;
    let architecture = Architecture::parse(&meta.architecture).map_err(|e| Error::format(path, e.to_string()))?;
    // The strict load below replaces every tensor, so the random initialisation is skipped.
    let model = {
        let _zeros = crate::tensor::init::skip_random_init();
        architecture.build(meta.in_channels, meta.num_classes, 0, device)?
    };
    load_into(model.as_ref(), &file, &LoadOptions::default())?;
    model.set_training(false);
    Ok(LoadedModel { model, meta, architecture })
}
