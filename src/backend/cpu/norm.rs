//! Batch normalisation on the CPU (BatchNorm1d and 2d share it: a [N, C] input is [N, C, 1]).
//! Statistics are accumulated in f64 per channel, so they stay accurate for large batches.

use super::buffers;
use crate::backend::NormShape;
use rayon::prelude::*;

/// Per-channel (sum, sum of squares around a shift) computed in one parallel pass over channels.
/// Returns biased mean and variance per channel.
pub fn channel_mean_var(s: NormShape, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    if s.plane == 1 {
        return row_mean_var(s, x);
    }
    let stats: Vec<(f64, f64)> = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            let planes = (0..s.batch).map(|n| plane(x, s, n, c));
            let count = s.per_channel() as f64;
            let mean = planes.clone().map(|p| lane_sum(p, |v| v)).sum::<f64>() / count;
            let var = planes.map(|p| lane_sum(p, |v| (v - mean) * (v - mean))).sum::<f64>() / count;
            (mean, var)
        })
        .collect();
    stats.into_iter().unzip()
}

/// [`channel_mean_var`] of a [N, C] input (BatchNorm1d), row by row: the per-channel walk would
/// read one float per row, a cache line apart. Sums run over n in the same order.
fn row_mean_var(s: NormShape, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let count = s.batch as f64;
    let mut mean = vec![0.0f64; s.channels];
    for row in x.chunks_exact(s.channels) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0f64; s.channels];
    for row in x.chunks_exact(s.channels) {
        var.iter_mut().zip(row).zip(&mean).for_each(|((acc, &v), m)| *acc += (v as f64 - m).powi(2));
    }
    var.iter_mut().for_each(|v| *v /= count);
    (mean, var)
}

/// Independent f64 partial sums [`lane_sum`] keeps: one chain of dependent f64 additions costs
/// four cycles per element, while eight chains run as fast as memory delivers.
const LANES: usize = 8;

/// The sum of `f(v)` over `values`, in f64: element i goes to partial sum i % 8, and the partials
/// are added in a fixed order at the end, so the result does not depend on threads or SIMD level.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v as f64);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += f(v as f64);
    }
    acc.iter().sum()
}

/// Per-lane `(sum(dy), sum(dy * xhat))` over one plane, as [`lane_sum`] adds them.
#[inline(always)]
fn lane_sums_dy(x: &[f32], dy: &[f32], mean: f32, inv_std: f32) -> (f64, f64) {
    let (mut sdy, mut sdyx) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut add = |lane: usize, xv: f32, d: f32| {
        let xhat = (xv - mean) * inv_std;
        sdy[lane] += d as f64;
        sdyx[lane] += (d * xhat) as f64;
    };
    let (xc, dc) = (x.chunks_exact(LANES), dy.chunks_exact(LANES));
    let (xt, dt) = (xc.remainder(), dc.remainder());
    for (xs, ds) in xc.zip(dc) {
        for lane in 0..LANES {
            add(lane, xs[lane], ds[lane]);
        }
    }
    for (lane, (&xv, &d)) in xt.iter().zip(dt).enumerate() {
        add(lane, xv, d);
    }
    (sdy.iter().sum(), sdyx.iter().sum())
}

fn plane(x: &[f32], s: NormShape, n: usize, c: usize) -> &[f32] {
    let start = (n * s.channels + c) * s.plane;
    &x[start..start + s.plane]
}

/// y = (x - mean[c]) * inv_std[c] * gamma[c] + beta[c], over every (n, c) plane in parallel.
pub fn normalize(s: NormShape, x: &[f32], mean: &[f32], inv_std: &[f32], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    normalize_parts(s, &[(x, s.channels)], mean, inv_std, gamma, beta, false)
}

/// [`normalize`] of the channel concatenation of `parts` ([N, C_i, plane] each, C_i summing to
/// `s.channels`), then ReLU when `relu`, in one pass read from the parts directly: DenseNet's
/// layers normalise (and activate) the concatenation of every earlier feature map, which is then
/// never built.
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
    let mut y = buffers::uninit(s.batch * s.channels * s.plane);
    if let ([(x, _)], 1) = (parts, s.plane) {
        normalize_rows(s, x, mean, inv_std, gamma, beta, relu, &mut y);
        return y;
    }
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

/// [`normalize_parts`] of one [N, C] input (BatchNorm1d): row by row, each row one vectorised
/// pass over the channels (handing single floats to the pool would cost far more than the math).
#[allow(clippy::too_many_arguments)]
fn normalize_rows(
    s: NormShape,
    x: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let scale: Vec<f32> = inv_std.iter().zip(gamma).map(|(i, g)| i * g).collect();
    let row = |(y, x): (&mut [f32], &[f32])| {
        for ((((o, &v), &m), &k), &b) in y.iter_mut().zip(x).zip(mean).zip(&scale).zip(beta) {
            let v = (v - m) * k + b;
            // NaN survives, as the ReLU op keeps it.
            *o = if relu && v < 0.0 { 0.0 } else { v };
        }
    };
    let rows_per_task = (1usize << 14).div_ceil(s.channels.max(1));
    y.par_chunks_mut(s.channels).zip(x.par_chunks(s.channels)).with_min_len(rows_per_task).for_each(row);
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
    if s.plane == 1 {
        return backward_rows(s, x, dy, gamma, mean, inv_std, batch_stats);
    }
    // Per channel: sum(dy) and sum(dy * xhat).
    let sums: Vec<(f64, f64)> = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            let (mut sdy, mut sdyx) = (0.0f64, 0.0f64);
            for n in 0..s.batch {
                let (a, b) = lane_sums_dy(plane(x, s, n, c), plane(dy, s, n, c), mean[c], inv_std[c]);
                sdy += a;
                sdyx += b;
            }
            (sdy, sdyx)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let count = s.per_channel() as f32;
    let mut dx = buffers::uninit(x.len());
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

/// [`batch_norm_backward`] of a [N, C] input (BatchNorm1d), row by row, with the same float
/// operations and summation order as the per-channel walk.
fn backward_rows(
    s: NormShape,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    batch_stats: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = s.channels;
    let (mut sdy, mut sdyx) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (xr, dr) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for ch in 0..c {
            let xhat = (xr[ch] - mean[ch]) * inv_std[ch];
            sdy[ch] += dr[ch] as f64;
            sdyx[ch] += (dr[ch] * xhat) as f64;
        }
    }
    let dbeta: Vec<f32> = sdy.iter().map(|&v| v as f32).collect();
    let dgamma: Vec<f32> = sdyx.iter().map(|&v| v as f32).collect();
    let count = s.per_channel() as f32;
    let mut dx = buffers::uninit(x.len());
    for ((o, xr), dr) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c)) {
        for ch in 0..c {
            let k = gamma[ch] * inv_std[ch];
            o[ch] = if batch_stats {
                let xhat = (xr[ch] - mean[ch]) * inv_std[ch];
                k * (dr[ch] - dbeta[ch] / count - xhat * (dgamma[ch] / count))
            } else {
                k * dr[ch]
            };
        }
    }
    (dx, dgamma, dbeta)
}
