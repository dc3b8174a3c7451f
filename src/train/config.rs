//! The training configuration: every option of `tools train`, readable from a TOML file and
//! written back resolved (`config.toml` in the run folder) so a run can be repeated exactly.

use super::optim::OptimizerKind;
use crate::data::{Augment, Fractions, Normalization, Preprocess, SourceOptions};
use crate::error::{Error, Result};
use crate::models::Architecture;
use crate::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How positives are weighted in the loss, from training-split frequencies only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosWeightMode {
    /// Plain BCE.
    None,
    /// pos_weight = negatives / positives per class (the MLP lab).
    Ratio,
    /// Positives weighted by the negative frequency and negatives by the positive frequency
    /// (the DenseNet lab's class-balanced loss).
    Balanced,
}

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Cosine,
    Plateau,
}

/// Every option of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Data source: `phantom[:COUNT[:SIZE]]`, an .npz, an NIH folder, a CSV, or a MedMNIST name.
    pub data: String,
    /// Architecture name (`mlp`, `resnet18`, `resnet18-small`, `resnet50`, `densenet121`, ...).
    pub arch: String,
    /// Input side in pixels.
    pub image_size: usize,
    /// Input channels: 1 (grey) or 3 (grey replicated, for ImageNet weights).
    pub channels: usize,
    pub normalization: Normalization,
    /// Weights to start from (torchvision layout safetensors or a cxr checkpoint).
    pub pretrained: Option<PathBuf>,
    /// Train only the classification head.
    pub freeze_backbone: bool,
    pub epochs: u64,
    /// Stop after this many optimizer steps even if epochs remain.
    pub max_steps: Option<u64>,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    /// None: the optimizer's default (AdamW 0.01, others 0).
    pub weight_decay: Option<f32>,
    /// SGD momentum.
    pub momentum: f32,
    pub nesterov: bool,
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    pub plateau_factor: f32,
    pub plateau_patience: u32,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f32>,
    pub pos_weight: PosWeightMode,
    /// Validate every N steps; None validates at the end of each epoch.
    pub validate_every: Option<u64>,
    /// Early stopping: validations without improvement of the mean AUROC before stopping.
    pub patience: Option<u32>,
    pub seed: u64,
    /// Patient-level split fractions `train,val,test` for sources without an official split.
    pub split: String,
    /// Keep only this view position (PA or AP).
    pub view: Option<String>,
    pub skip_missing: bool,
    pub skip_corrupt: bool,
    pub allow_leakage: bool,
    /// On-disk cache of resized images.
    pub cache_dir: Option<PathBuf>,
    pub augment: Augment,
    /// Also write best.f16.safetensors (half the size, for devices).
    pub save_f16: bool,
    /// Where the model trains: `cpu`, `cuda`, `cuda:N` (`cuda-emu` in builds with that feature).
    pub device: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: "phantom".into(),
            arch: "resnet18".into(),
            image_size: 64,
            channels: 1,
            normalization: Normalization::UnitRange,
            pretrained: None,
            freeze_backbone: false,
            epochs: 5,
            max_steps: None,
            batch_size: 32,
            optimizer: OptimizerKind::AdamW,
            lr: 1e-3,
            weight_decay: None,
            momentum: 0.9,
            nesterov: false,
            warmup_steps: 0,
            schedule: ScheduleKind::Cosine,
            plateau_factor: 0.1,
            plateau_patience: 2,
            clip_grad_norm: None,
            pos_weight: PosWeightMode::None,
            validate_every: None,
            patience: None,
            seed: 0,
            split: "0.7,0.1,0.2".into(),
            view: None,
            skip_missing: false,
            skip_corrupt: false,
            allow_leakage: false,
            cache_dir: None,
            augment: Augment::default(),
            save_f16: false,
            device: "cpu".into(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys are an error naming them.
    pub fn from_toml_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::format(path, format!("invalid training config: {e}")))
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# config could not be encoded: {e}\n"))
    }

    /// The architecture, checked.
    pub fn architecture(&self) -> Result<Architecture> {
        Architecture::parse(&self.arch)
    }

    /// The device the model trains on.
    pub fn device(&self) -> Result<Device> {
        self.device.parse()
    }

    /// The preprocessing the model sees.
    pub fn preprocess(&self) -> Preprocess {
        Preprocess { channels: self.channels, size: self.image_size, normalization: self.normalization }
    }

    /// How the data source is opened and split. `tools eval` rebuilds these from the configuration
    /// stored in a checkpoint, so its `--split test` holds exactly the patients training held out.
    pub fn source_options(&self) -> Result<SourceOptions> {
        Ok(SourceOptions {
            fractions: Fractions::parse(&self.split)?,
            seed: self.seed,
            view: self.view.clone(),
            skip_missing: self.skip_missing,
            allow_leakage: self.allow_leakage,
            ..SourceOptions::default()
        })
    }

    /// Checks values that would otherwise fail deep inside a run.
    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::InvalidArgument { op: "train config", detail });
        let arch = self.architecture()?;
        self.device()?;
        if self.batch_size < 2 {
            return bad(format!("batch_size {} is too small: batch norm needs at least 2 images", self.batch_size));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr {} must be positive", self.lr));
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return bad("epochs is 0 and no max_steps: nothing to train".into());
        }
        if self.channels != 1 && self.channels != 3 {
            return bad(format!("channels {} must be 1 or 3", self.channels));
        }
        if self.normalization == Normalization::XrayVision && self.channels != 1 {
            return bad("xrayvision normalisation takes 1 channel".into());
        }
        let mlp = matches!(arch, Architecture::Mlp | Architecture::MlpDeeper | Architecture::MlpWider);
        if mlp && self.channels * self.image_size * self.image_size != 784 {
            return bad(format!(
                "the MLP takes 784 inputs (28x28x1); image_size {} x channels {} gives {}",
                self.image_size,
                self.channels,
                self.channels * self.image_size * self.image_size
            ));
        }
        if !mlp && self.image_size < 16 {
            return bad(format!("image_size {} is too small for {}", self.image_size, self.arch));
        }
        Ok(())
    }
}
