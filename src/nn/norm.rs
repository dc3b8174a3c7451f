//! Batch normalisation layer (torch.nn.BatchNorm1d / BatchNorm2d): weight, bias, running_mean,
//! running_var. PyTorch's `num_batches_tracked` is not kept (it only matters for momentum=None).

use super::{join, Module, TensorRole};
use crate::backend::Device;
use crate::error::Result;
use crate::ops::{self, BatchNormState};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};

/// Batch norm over the channel axis of [N, C] or [N, C, H, W].
#[derive(Debug)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub state: BatchNormState,
    training: AtomicBool,
}

impl BatchNorm {
    /// gamma 1, beta 0, running mean 0 and variance 1; eps 1e-5, momentum 0.1 (PyTorch's defaults).
    pub fn new(channels: usize, device: Device) -> Result<BatchNorm> {
        Ok(BatchNorm {
            weight: Tensor::ones([channels], device)?.with_grad()?,
            bias: Tensor::zeros([channels], device)?.with_grad()?,
            state: BatchNormState {
                running_mean: Tensor::zeros([channels], device)?,
                running_var: Tensor::ones([channels], device)?,
                momentum: 0.1,
                eps: 1e-5,
            },
            training: AtomicBool::new(true),
        })
    }

    /// Normalises x with batch statistics in training mode, running statistics in eval mode.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::batch_norm(x, &self.weight, &self.bias, &self.state, self.is_training())
    }

    /// relu(forward(x)), in one pass at inference.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        ops::batch_norm_relu(x, &self.weight, &self.bias, &self.state, self.is_training())
    }

    /// relu(forward(x) + residual) (no add without one): in training mode one op, forward and
    /// backward.
    pub fn forward_add_relu(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        match (self.is_training(), residual) {
            (true, _) => ops::batch_norm_add_relu(x, residual, &self.weight, &self.bias, &self.state),
            (false, Some(r)) => ops::relu(&ops::add(&self.forward(x)?, r)?),
            (false, None) => self.forward_relu(x),
        }
    }

    /// relu(forward(cat_channels(parts))), without building the concatenation at inference.
    pub fn forward_relu_cat(&self, parts: &[&Tensor]) -> Result<Tensor> {
        ops::cat_batch_norm_relu(parts, &self.weight, &self.bias, &self.state, self.is_training())
    }

    /// The parameters a fused convolution applies this norm with, in eval mode (None in
    /// training mode, where the norm needs the batch's statistics).
    pub fn eval_params(&self) -> Option<ops::NormParams<'_>> {
        (!self.is_training()).then_some(ops::NormParams { gamma: &self.weight, beta: &self.bias, state: &self.state })
    }

    /// True in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Channels normalised.
    pub fn channels(&self) -> usize {
        self.weight.numel()
    }
}

impl Module for BatchNorm {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        f(&join(prefix, "weight"), &self.weight, TensorRole::Parameter);
        f(&join(prefix, "bias"), &self.bias, TensorRole::Parameter);
        f(&join(prefix, "running_mean"), &self.state.running_mean, TensorRole::Buffer);
        f(&join(prefix, "running_var"), &self.state.running_var, TensorRole::Buffer);
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
