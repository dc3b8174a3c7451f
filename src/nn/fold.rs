//! Batch-norm folding for inference: an eval-mode BatchNorm after a convolution is an affine map
//! per output channel, so it can be merged into the convolution's weight and bias:
//!   s = gamma / sqrt(running_var + eps),  W' = W * s[o],  b' = (b - running_mean) * s + beta.
//! The folded network computes the same function up to float rounding, with one pass less over
//! every activation.

use super::{BatchNorm, Conv2d};
use crate::error::Result;
use crate::tensor::Tensor;

/// Folds `bn` (eval-mode statistics) into `conv`, giving the conv a bias if it had none.
pub fn fold_into_conv(conv: &mut Conv2d, bn: &BatchNorm) -> Result<()> {
    let gamma = bn.weight.to_vec()?;
    let beta = bn.bias.to_vec()?;
    let mean = bn.state.running_mean.to_vec()?;
    let var = bn.state.running_var.to_vec()?;
    let scale: Vec<f64> =
        gamma.iter().zip(&var).map(|(&g, &v)| g as f64 / (v as f64 + bn.state.eps as f64).sqrt()).collect();
    let w = conv.weight.to_vec()?;
    let per_out = w.len() / scale.len();
    let folded_w: Vec<f32> = w.iter().enumerate().map(|(i, &x)| (x as f64 * scale[i / per_out]) as f32).collect();
    let old_bias = match &conv.bias {
        Some(b) => b.to_vec()?,
        None => vec![0.0; scale.len()],
    };
    let folded_b: Vec<f32> =
        (0..scale.len()).map(|o| ((old_bias[o] as f64 - mean[o] as f64) * scale[o] + beta[o] as f64) as f32).collect();
    let device = conv.weight.device();
    let requires_grad = conv.weight.requires_grad();
    conv.weight = Tensor::from_vec_on(folded_w, conv.weight.shape().clone(), device)?;
    conv.weight.set_requires_grad(requires_grad)?;
    let bias = Tensor::from_vec_on(folded_b, [scale.len()], device)?;
    bias.set_requires_grad(requires_grad)?;
    conv.bias = Some(bias);
    Ok(())
}
