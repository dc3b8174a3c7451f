//! Binary cross-entropy with logits, in the numerically stable form PyTorch uses.
//!
//! Per element, with weight w = pos_weight[class] (1 when absent) and l = 1 + (w - 1) * t:
//!   loss = (1 - t) * x + l * (log(1 + exp(-|x|)) + max(-x, 0))
//! which never evaluates exp of a large positive number. Its derivative is
//!   dloss/dx = (1 - t) - l * sigmoid(-x).

use super::elementwise::sigmoid_scalar;

fn weight(pos_weight: Option<&[f32]>, class: usize) -> f32 {
    pos_weight.map_or(1.0, |w| w[class])
}

/// Mean loss over all rows x classes, accumulated in f64.
pub fn bce_with_logits(x: &[f32], t: &[f32], pos_weight: Option<&[f32]>, classes: usize) -> f32 {
    let mut total = 0.0f64;
    for (i, (&x, &t)) in x.iter().zip(t).enumerate() {
        let l = 1.0 + (weight(pos_weight, i % classes) - 1.0) * t;
        let softplus_neg = (-x.abs()).exp().ln_1p() + (-x).max(0.0);
        total += ((1.0 - t) * x + l * softplus_neg) as f64;
    }
    (total / x.len() as f64) as f32
}

/// Gradient of the mean loss w.r.t. the logits, times `scale`.
pub fn bce_with_logits_backward(
    x: &[f32],
    t: &[f32],
    pos_weight: Option<&[f32]>,
    classes: usize,
    scale: f32,
) -> Vec<f32> {
    let k = scale / x.len() as f32;
    x.iter()
        .zip(t)
        .enumerate()
        .map(|(i, (&x, &t))| {
            let l = 1.0 + (weight(pos_weight, i % classes) - 1.0) * t;
            // d/dx [(1-t) x + l softplus(-x)] = (1 - t) - l * sigmoid(-x)
            k * ((1.0 - t) - l * sigmoid_scalar(-x))
        })
        .collect()
}
