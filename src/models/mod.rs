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
}

/// Derives the seed of sub-layer `index` from a model seed, so each layer draws its own stream.
pub(crate) fn layer_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(index.wrapping_mul(0xD1B5_4A32_D192_ED03))
}
