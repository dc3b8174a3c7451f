//! The classifiers cxr trains: the ChestMNIST MLP, torchvision's ResNet family and DenseNet121.
//!
//! Every model is a [`Module`] (torchvision's parameter names) and a [`Model`]: a forward pass with
//! named *tap points* (`layer4`, `features.norm5`, ...) where a caller can read or replace the
//! activation. Grad-CAM uses a tap to make the target activation a fresh leaf that requires grad,
//! so backward stops there instead of walking the backbone.

pub mod densenet;
pub mod mlp;
pub mod resnet;

pub use densenet::{DenseNet, DenseNetConfig};
pub use mlp::{Mlp, MlpConfig};
pub use resnet::{ResNet, ResNetConfig};

use crate::error::Result;
use crate::nn::Module;
use crate::tensor::Tensor;

/// Called at each tap point with its name and activation; returns the activation to continue with.
pub type Tap<'a> = dyn FnMut(&str, Tensor) -> Result<Tensor> + 'a;

/// A classifier producing logits [N, classes].
pub trait Model: Module {
    /// Forward pass calling `tap` at every tap point, in order.
    fn forward_tapped(&self, x: &Tensor, tap: &mut Tap<'_>) -> Result<Tensor>;

    /// Forward pass to logits.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_tapped(x, &mut |_, t| Ok(t))
    }

    /// Names of the tap points, in forward order.
    fn tap_points(&self) -> Vec<String>;

    /// Number of output classes.
    fn num_classes(&self) -> usize;

    /// Prepares the model for inference by folding every batch norm that directly follows a
    /// convolution into that convolution's weight and bias (with the running statistics), so
    /// the convolution, its bias, a residual add and the ReLU run as one kernel. Afterwards the
    /// model cannot train (those norms are gone) and its tensor names change; outputs change by
    /// float rounding only. Models without such norms are left as they are.
    fn fold_batch_norm(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Derives the seed of sub-layer `index` from a model seed, so each layer draws its own stream.
pub(crate) fn layer_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// The architectures cxr builds, by the names checkpoints and the command line use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// The ChestMNIST lab MLP (784-512-256-128-64).
    Mlp,
    /// The lab's deeper MLP (1024-512-256-128).
    MlpDeeper,
    /// The lab's wider MLP (1024-1024).
    MlpWider,
    ResNet18,
    /// ResNet18 with MedMNIST's small-image stem.
    ResNet18Small,
    ResNet34,
    ResNet50,
    DenseNet121,
}

impl Architecture {
    /// Every architecture, in the order `--help` lists them.
    pub const ALL: [Architecture; 8] = [
        Architecture::Mlp,
        Architecture::MlpDeeper,
        Architecture::MlpWider,
        Architecture::ResNet18,
        Architecture::ResNet18Small,
        Architecture::ResNet34,
        Architecture::ResNet50,
        Architecture::DenseNet121,
    ];

    /// The name used in checkpoints and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Mlp => "mlp",
            Architecture::MlpDeeper => "mlp-deeper",
            Architecture::MlpWider => "mlp-wider",
            Architecture::ResNet18 => "resnet18",
            Architecture::ResNet18Small => "resnet18-small",
            Architecture::ResNet34 => "resnet34",
            Architecture::ResNet50 => "resnet50",
            Architecture::DenseNet121 => "densenet121",
        }
    }

    /// Parses a name as [`name`](Self::name) spells it.
    pub fn parse(name: &str) -> Result<Architecture> {
        Self::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| crate::Error::InvalidArgument {
            op: "architecture",
            detail: format!("unknown architecture '{name}' (known: {})", Self::ALL.map(|a| a.name()).join(", ")),
        })
    }

    /// The name prefix of the classification head.
    pub fn head_name(self) -> &'static str {
        match self {
            Architecture::Mlp | Architecture::MlpDeeper | Architecture::MlpWider => "classifier",
            Architecture::DenseNet121 => "classifier",
            _ => "fc",
        }
    }

    /// A freshly initialised model. `in_channels` is ignored by the MLPs, whose input is the
    /// flattened 28x28 image.
    pub fn build(self, in_channels: usize, classes: usize, seed: u64, device: crate::Device) -> Result<Box<dyn Model>> {
        let with_classes = |mut c: MlpConfig| {
            c.classes = classes;
            c
        };
        Ok(match self {
            Architecture::Mlp => Box::new(Mlp::new(with_classes(MlpConfig::chestmnist()), seed, device)?),
            Architecture::MlpDeeper => Box::new(Mlp::new(with_classes(MlpConfig::deeper()), seed, device)?),
            Architecture::MlpWider => Box::new(Mlp::new(with_classes(MlpConfig::wider()), seed, device)?),
            Architecture::ResNet18 => {
                Box::new(ResNet::new(ResNetConfig::resnet18(in_channels, classes), seed, device)?)
            }
            Architecture::ResNet18Small => {
                Box::new(ResNet::new(ResNetConfig::resnet18(in_channels, classes).small_stem(), seed, device)?)
            }
            Architecture::ResNet34 => {
                Box::new(ResNet::new(ResNetConfig::resnet34(in_channels, classes), seed, device)?)
            }
            Architecture::ResNet50 => {
                Box::new(ResNet::new(ResNetConfig::resnet50(in_channels, classes), seed, device)?)
            }
            Architecture::DenseNet121 => {
                Box::new(DenseNet::new(DenseNetConfig::densenet121(in_channels, classes), seed, device)?)
            }
        })
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
