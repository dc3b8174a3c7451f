//! Batch normalisation on the CPU (BatchNorm1d and 2d share it: a [N, C] input is [N, C, 1]).
//! Statistics are accumulated in f64 per channel, so they stay accurate for large batches.

use crate::backend::NormShape;
use rayon::prelude::*;

/// Per-channel (sum, sum of squares around a shift) computed in one parallel pass over channels.
/// Returns biased mean and variance per channel.
pub fn channel_mean_var(s: NormShape, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let stats: Vec<(f64, f64)> = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            let planes = (0..s.batch).map(|n| plane(x, s, n, c));
            let count = s.per_channel() as f64;
            let mean = planes.clone().flatten().map(|&v| v as f64).sum::<f64>() / count;
            let var = planes.flatten().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / count;
            (mean, var)
        })
        .collect();
    stats.into_iter().unzip()
}

fn plane(x: &[f32], s: NormShape, n: usize, c: usize) -> &[f32] {
    let start = (n * s.channels + c) * s.plane;
    &x[start..start + s.plane]
}

/// y = (x - mean[c]) * inv_std[c] * gamma[c] + beta[c], over every (n, c) plane in parallel.
pub fn normalize(s: NormShape, x: &[f32], mean: &[f32], inv_std: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    normalize_then(s, x, mean, inv_std, gamma, beta, false)
}

/// [`normalize`], then ReLU when `relu` (in the same pass: pre-activation networks such as
/// DenseNet follow every eval-mode norm with one).
pub fn normalize_then(
    s: NormShape,
    x: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    relu: bool,
) -> Vec<f32> {
    normalize_parts(s, &[(x, s.channels)], mean, inv_std, gamma, beta, relu)
}

/// [`normalize_then`] of the channel concatenation of `parts` ([N, C_i, plane] each, C_i
/// summing to `s.channels`), read from the parts directly: DenseNet's layers normalise the
/// concatenation of every earlier feature map, which is then never built.
pub fn normalize_parts(
    s: NormShape,
    parts: &[(&[f32], usize)],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    relu: bool,
) -> Vec<f32> {
    /// Fewest floats per parallel task: late layers have 7x7 planes, far too small to hand out
    /// one by one.
    const MIN_TASK: usize = 1 << 14;
    // Output channel c of image n comes from part `owner[c]`, at its channel `c - first[owner]`.
    let mut owner = Vec::with_capacity(s.channels);
    let mut first = Vec::with_capacity(parts.len());
    for (i, &(_, channels)) in parts.iter().enumerate() {
        first.push(owner.len());
        owner.extend(std::iter::repeat_n(i, channels));
    }
    let mut y = vec![0.0; s.batch * s.channels * s.plane];
    let plane_len = s.plane.max(1);
    let planes_per_task = MIN_TASK.div_ceil(plane_len);
    y.par_chunks_mut(plane_len).enumerate().with_min_len(planes_per_task).for_each(|(i, y)| {
        let (n, c) = (i / s.channels, i % s.channels);
        let (data, channels) = parts[owner[c]];
        let x = &data[(n * channels + c - first[owner[c]]) * s.plane..][..s.plane];
        // (x - mean) first: folding the mean into a shift (x * scale + shift) cancels
        // catastrophically when |mean| is large next to the spread, as in late DenseNet layers.
        let (m, scale, b) = (mean[c], inv_std[c] * gamma[c], beta[c]);
        if relu {
            // NaN survives, as the ReLU op keeps it.
            y.iter_mut().zip(x).for_each(|(y, &x)| {
                let v = (x - m) * scale + b;
                *y = if v < 0.0 { 0.0 } else { v };
            });
        } else {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = (x - m) * scale + b);
        }
    });
    y
}

/// Training-mode forward. Updates the running statistics in place and returns
/// (y, batch mean, batch 1/std).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train(
    s: NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    momentum: f32,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mean, var) = channel_mean_var(s, x);
    let count = s.per_channel() as f64;
    let unbias = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
    let m = momentum as f64;
    for c in 0..s.channels {
        running_mean[c] = ((1.0 - m) * running_mean[c] as f64 + m * mean[c]) as f32;
        running_var[c] = ((1.0 - m) * running_var[c] as f64 + m * var[c] * unbias) as f32;
    }
    let mean_f: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    let inv_std: Vec<f32> = var.iter().map(|&v| (1.0 / (v + eps as f64).sqrt()) as f32).collect();
    let y = normalize(s, x, &mean_f, &inv_std, gamma, beta);
    (y, mean_f, inv_std)
}

/// 1 / sqrt(var + eps).
pub fn inv_std(var: &[f32], eps: f32) -> Vec<f32> {
    var.iter().map(|&v| (1.0 / (v as f64 + eps as f64).sqrt()) as f32).collect()
}

/// Backward of batch norm. Returns (dx, dgamma, dbeta).
///
/// With batch statistics (training), the gradient flows through mean and variance:
/// dx = gamma * inv_std / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)), M = N * plane.
/// With running statistics (eval), batch norm is an affine map: dx = dy * gamma * inv_std.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    s: NormShape,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    batch_stats: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // Per channel: sum(dy) and sum(dy * xhat).
    let sums: Vec<(f64, f64)> = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
            for n in 0..s.batch {
                for (&xv, &d) in plane(x, s, n, c).iter().zip(plane(dy, s, n, c)) {
                    let xhat = (xv - mean[c]) * inv_std[c];
                    sdy += d as f64;
                    sdyx += (d * xhat) as f64;
                }
            }
            (sdy, sdyx)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let count = s.per_channel() as f32;
    let mut dx = vec![0.0; x.len()];
    let plane_len = s.plane.max(1);
    dx.par_chunks_mut(plane_len).zip(x.par_chunks(plane_len).zip(dy.par_chunks(plane_len))).enumerate().for_each(
        |(i, (dx, (x, dy)))| {
            let c = i % s.channels;
            let k = gamma[c] * inv_std[c];
            if batch_stats {
                let mean_dy = dbeta[c] / count;
                let mean_dyx = dgamma[c] / count;
                for ((o, &xv), &d) in dx.iter_mut().zip(x).zip(dy) {
                    let xhat = (xv - mean[c]) * inv_std[c];
                    *o = k * (d - mean_dy - xhat * mean_dyx);
                }
            } else {
                dx.iter_mut().zip(dy).for_each(|(o, &d)| *o = k * d);
            }
        },
    );
    (dx, dgamma, dbeta)
}
