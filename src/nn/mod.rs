//! Layers: parameters and buffers with torchvision's state_dict names, a train/eval switch, and a
//! forward built from [`crate::ops`].
//!
//! A [`Module`] exposes its tensors through [`Module::visit`], so checkpoints, optimizers and
//! freezing all walk the same names (`conv1.weight`, `layer1.0.bn1.running_mean`, `fc.bias`, ...).

mod conv;
mod dropout;
pub mod fold;
mod linear;
mod norm;

pub use conv::{Conv2d, Conv2dSpec};
pub use dropout::Dropout;
pub use linear::Linear;
pub use norm::BatchNorm;

use crate::error::Result;
use crate::tensor::Tensor;

/// Whether a named tensor is trained or only tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Learned by the optimizer (requires grad unless frozen).
    Parameter,
    /// State updated by the forward pass (batch-norm running statistics).
    Buffer,
}

/// A named tensor of a module.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
    pub role: TensorRole,
}

/// Joins a prefix and a name with a dot, as PyTorch's state_dict does.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A layer or a model.
pub trait Module: Send + Sync {
    /// Calls `f` with every parameter and buffer, named with `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole));

    /// Switches training mode (batch statistics, dropout) on or off, recursively.
    fn set_training(&self, training: bool);

    /// Every parameter and buffer with its full name, in definition order.
    fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        self.visit("", &mut |name, t, role| out.push(NamedTensor { name: name.to_string(), tensor: t.clone(), role }));
        out
    }

    /// Every trainable parameter (role Parameter), named.
    fn parameters(&self) -> Vec<NamedTensor> {
        self.named_tensors().into_iter().filter(|t| t.role == TensorRole::Parameter).collect()
    }

    /// Number of parameter elements.
    fn parameter_count(&self) -> usize {
        self.parameters().iter().map(|p| p.tensor.numel()).sum()
    }

    /// The stream positions of the dropout layers, in a fixed order (saved for exact resumption).
    fn dropout_calls(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Restores positions returned by [`dropout_calls`](Self::dropout_calls).
    fn set_dropout_calls(&self, _calls: &[u64]) {}

    /// Clears every parameter's accumulated gradient.
    fn zero_grad(&self) {
        self.parameters().iter().for_each(|p| p.tensor.zero_grad());
    }

    /// Turns gradient tracking of the parameters whose name satisfies `select` on or off
    /// (freezing a backbone, training only the head).
    fn set_trainable(&self, select: &dyn Fn(&str) -> bool, on: bool) -> Result<()> {
        for p in self.parameters() {
            if select(&p.name) {
                p.tensor.set_requires_grad(on)?;
            }
        }
        Ok(())
    }
}
