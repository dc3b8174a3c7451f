//! Fully connected layer (torch.nn.Linear): weight [out, in], bias [out].

use super::{join, Module, TensorRole};
use crate::backend::Device;
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

/// y = x W^T + b.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default init: weight and bias U(-1/sqrt(in), 1/sqrt(in)).
    pub fn new(in_features: usize, out_features: usize, bias: bool, seed: u64, device: Device) -> Result<Linear> {
        let weight =
            Tensor::torch_default_uniform([out_features, in_features], in_features, seed, device)?.with_grad()?;
        let bias = if bias {
            Some(Tensor::torch_default_uniform([out_features], in_features, seed ^ 0xB1A5, device)?.with_grad()?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// Applies the layer to x [N, in].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
}

impl Module for Linear {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        f(&join(prefix, "weight"), &self.weight, TensorRole::Parameter);
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b, TensorRole::Parameter);
        }
    }
    fn set_training(&self, _training: bool) {}
}
