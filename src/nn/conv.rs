//! 2-D convolution layer (torch.nn.Conv2d with square kernel, stride and padding, one group).

use super::{join, Module, TensorRole};
use crate::backend::Device;
use crate::error::Result;
use crate::ops;
use crate::tensor::init::FanMode;
use crate::tensor::Tensor;

/// A convolution with weight [out, in, k, k] and optional bias [out].
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
}

/// The shape of a square convolution.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

impl Conv2d {
    /// Kaiming-normal weights (ReLU gain) scaled by `mode`'s fan, zero bias: the init torchvision's
    /// ResNet (fan_out) and DenseNet (fan_in) use.
    pub fn new(spec: Conv2dSpec, mode: FanMode, seed: u64, device: Device) -> Result<Conv2d> {
        let shape = [spec.out_channels, spec.in_channels, spec.kernel, spec.kernel];
        let weight = Tensor::kaiming_normal(shape, mode, seed, device)?.with_grad()?;
        let bias = if spec.bias { Some(Tensor::zeros([spec.out_channels], device)?.with_grad()?) } else { None };
        Ok(Conv2d { weight, bias, stride: spec.stride, padding: spec.padding })
    }

    /// Applies the convolution to x [N, C, H, W].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    /// The convolution followed by `tail` (eval-mode norm, residual, ReLU): see
    /// [`ops::conv2d_fused`] (one kernel when nothing records a graph).
    pub fn forward_fused(&self, x: &Tensor, tail: ops::ConvTail<'_>) -> Result<Tensor> {
        ops::conv2d_fused(x, &self.weight, self.bias.as_ref(), self.stride, self.padding, tail)
    }
}

impl Module for Conv2d {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        f(&join(prefix, "weight"), &self.weight, TensorRole::Parameter);
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b, TensorRole::Parameter);
        }
    }
    fn set_training(&self, _training: bool) {}
}
