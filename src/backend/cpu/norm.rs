//! Batch normalisation on the CPU (BatchNorm1d and 2d share it: a [N, C] input is [N, C, 1]).
//! Statistics are accumulated in f64 per channel, so they stay accurate for large batches.

use super::buffers;
use super::simd::{vectorised, SimdLevel};
use crate::backend::NormShape;
use rayon::prelude::*;

/// Per-channel biased mean and variance from one pass over x: f64 sums of (x - shift) and its
/// square, the shift being the channel's first value, so the variance keeps full precision when
/// the mean is large next to the spread.
pub fn channel_mean_var(s: NormShape, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    if s.plane == 1 {
        return row_mean_var(s, x);
    }
    let level = SimdLevel::current();
    let shifts: Vec<f64> = (0..s.channels).map(|c| plane(x, s, 0, c)[0] as f64).collect();
    let sums = channel_sums(s, |i| {
        let shift = shifts[i % s.channels];
        let (sum, sum_sq) = lane_sums_shifted(level, &x[i * s.plane..][..s.plane], shift);
        [sum, sum_sq]
    });
    let count = s.per_channel() as f64;
    sums.iter()
        .zip(&shifts)
        .map(|(&[sum, sum_sq], &shift)| {
            let centre = sum / count;
            (shift + centre, (sum_sq / count - centre * centre).max(0.0))
        })
        .unzip()
}

/// Per-channel pairs of sums over the batch: `plane_sums(i)` for every plane i = n * C + c,
/// computed in parallel in memory order (each task streams consecutive planes; walking one
/// channel's planes, a few KiB each far apart, defeats the hardware prefetcher), then added over
/// n in order for each channel, so the result does not depend on scheduling.
fn channel_sums<const K: usize>(s: NormShape, plane_sums: impl Fn(usize) -> [f64; K] + Sync) -> Vec<[f64; K]> {
    let planes: Vec<[f64; K]> =
        (0..s.batch * s.channels).into_par_iter().with_min_len(min_planes(s)).map(&plane_sums).collect();
    (0..s.channels)
        .map(|c| {
            (0..s.batch).fold([0.0f64; K], |mut acc, n| {
                acc.iter_mut().zip(&planes[n * s.channels + c]).for_each(|(a, p)| *a += p);
                acc
            })
        })
        .collect()
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

/// Independent f64 partial sums per reduction: one chain of dependent f64 additions costs four
/// cycles per element, while eight chains run as fast as memory delivers. Element i goes to
/// partial sum i % 8, and the partials are added in a fixed order at the end, so results do not
/// depend on threads or SIMD level.
const LANES: usize = 8;

/// `(sum(x - shift), sum((x - shift)^2))` over one plane in f64, in [`LANES`] partial sums
/// (the same partial sums, to the bit, at every SIMD level).
fn lane_sums_shifted(level: SimdLevel, values: &[f32], shift: f64) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: the level is only Avx512 when the CPU has AVX-512F.
        SimdLevel::Avx512 => return unsafe { vector::shifted_sums_avx512(values, shift) },
        // SAFETY: the level is only Avx2 when the CPU has AVX2.
        SimdLevel::Avx2 => return unsafe { vector::shifted_sums_avx2(values, shift) },
        SimdLevel::Portable => {}
    }
    let _ = level;
    let (mut sum, mut sum_sq) = ([0.0f64; LANES], [0.0f64; LANES]);
    for chunk in values.chunks(LANES) {
        // Lanes past the plane's end add 0, as the vector code's masks do.
        let mut d = [0.0f64; LANES];
        d.iter_mut().zip(chunk).for_each(|(d, &v)| *d = v as f64 - shift);
        sum.iter_mut().zip(&d).for_each(|(s, d)| *s += d);
        sum_sq.iter_mut().zip(&d).for_each(|(s, d)| *s += d * d);
    }
    (sum.iter().sum(), sum_sq.iter().sum())
}

/// Where a batch norm's backward lets dy through, within one plane: a fused ReLU's mask
/// ([`relu_passes`] of the output).
#[derive(Clone, Copy)]
enum Gate<'a> {
    /// Everywhere (a plain batch norm).
    All,
    /// Where this plane of the forward's output passes.
    Positive(&'a [f32]),
    /// Where the normalised value [`affine`]`(x, mean, scale, shift)` passes.
    Affine { mean: f32, scale: f32, shift: f32 },
}

impl Gate<'_> {
    /// Whether element `l` of the plane, with input value `x`, passes.
    #[inline(always)]
    fn passes(&self, l: usize, x: f32) -> bool {
        match *self {
            Gate::All => true,
            Gate::Positive(out) => relu_passes(out[l]),
            Gate::Affine { mean, scale, shift } => relu_passes(affine(x, mean, scale, shift)),
        }
    }
}

/// `[sum(d), sum(d * xhat), sum(x - mean)]` over one plane in [`LANES`] partial sums (the same,
/// to the bit, at every SIMD level), where d is dy where `gate` passes and 0 elsewhere, and
/// xhat = (x - mean) * inv_std. The last sum measures how far the f32 mean is from the data's.
fn lane_sums_dy(level: SimdLevel, x: &[f32], dy: &[f32], gate: Gate<'_>, mean: f32, inv_std: f32) -> [f64; 3] {
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: the level is only Avx512 when the CPU has AVX-512F.
        SimdLevel::Avx512 => return unsafe { vector::dy_sums_avx512(x, dy, gate, mean, inv_std) },
        // SAFETY: the level is only Avx2 when the CPU has AVX2.
        SimdLevel::Avx2 => return unsafe { vector::dy_sums_avx2(x, dy, gate, mean, inv_std) },
        SimdLevel::Portable => {}
    }
    let _ = level;
    let (mut sdy, mut sdyx, mut sxc) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
    for start in (0..x.len()).step_by(LANES) {
        let len = LANES.min(x.len() - start);
        // Lanes past the plane's end add 0, as the vector code's zero padding and masks do.
        let (mut d, mut dxhat, mut xc) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for l in 0..LANES {
            let (xv, dv) = if l < len { (x[start + l], dy[start + l]) } else { (0.0, 0.0) };
            let centred = xv - mean;
            let xhat = centred * inv_std;
            d[l] = if l < len && gate.passes(start + l, xv) { dv } else { 0.0 };
            dxhat[l] = d[l] * xhat;
            xc[l] = if l < len { centred } else { 0.0 };
        }
        sdy.iter_mut().zip(&d).for_each(|(s, &v)| *s += v as f64);
        sdyx.iter_mut().zip(&dxhat).for_each(|(s, &v)| *s += v as f64);
        sxc.iter_mut().zip(&xc).for_each(|(s, &v)| *s += v as f64);
    }
    [sdy.iter().sum(), sdyx.iter().sum(), sxc.iter().sum()]
}

/// One plane of a batch norm's input gradient: dx = k * (d - mean_dy - xhat * mean_dyx), xhat
/// centred on mean + offset ([`MeanTerms`]), d the
/// masked dy as in [`lane_sums_dy`], also written to `dres` (the residual's gradient) when given.
/// Plain elementwise loops, which the compiler vectorises inside [`vectorised`].
#[inline(always)]
fn input_grad_plane(
    dx: &mut [f32],
    dres: Option<&mut [f32]>,
    (x, dy, gate): (&[f32], &[f32], Gate<'_>),
    stats: (f32, f32, f32),
    (k, mean_dy, mean_dyx): (f32, f32, f32),
) {
    // One loop per gate kind, so each inner loop is branch-free.
    let coeffs = (k, mean_dy, mean_dyx);
    match gate {
        Gate::All => input_grad_loop(dx, dres, x, dy, x, |_, _| true, stats, coeffs),
        Gate::Positive(out) => input_grad_loop(dx, dres, x, dy, out, |_, out| relu_passes(out), stats, coeffs),
        Gate::Affine { mean: m, scale, shift } => {
            input_grad_loop(dx, dres, x, dy, x, |x, _| relu_passes(affine(x, m, scale, shift)), stats, coeffs)
        }
    }
}

/// [`input_grad_plane`] for one gate kind: `passes(x, gate)` per element. Zipped iterators, no
/// indexing, so no bounds checks stand in the way of vectorising.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn input_grad_loop(
    dx: &mut [f32],
    dres: Option<&mut [f32]>,
    x: &[f32],
    dy: &[f32],
    gate: &[f32],
    passes: impl Fn(f32, f32) -> bool,
    (mean, offset, inv_std): (f32, f32, f32),
    (k, mean_dy, mean_dyx): (f32, f32, f32),
) {
    let grad = |xv: f32, dv: f32, gv: f32| {
        let d = if passes(xv, gv) { dv } else { 0.0 };
        let xhat = ((xv - mean) - offset) * inv_std;
        (d, k * (d - mean_dy - xhat * mean_dyx))
    };
    let inputs = x.iter().zip(dy).zip(gate);
    match dres {
        Some(dr) => {
            for ((o, r), ((&xv, &dv), &gv)) in dx.iter_mut().zip(dr.iter_mut()).zip(inputs) {
                (*r, *o) = grad(xv, dv, gv);
            }
        }
        None => dx.iter_mut().zip(inputs).for_each(|(o, ((&xv, &dv), &gv))| *o = grad(xv, dv, gv).1),
    }
}

/// The per-channel means the input gradient subtracts, from the sums of [`lane_sums_dy`].
///
/// `offset` is the mean of x - mean, how far the f32 mean (rounded from f64) is from the data's
/// own: where the spread is small next to the mean it shifts every xhat the same way, and with
/// few values per channel dx is a small difference of large terms that inherits the shift (two
/// values per channel: dx is 2% of dy, and a half-ulp offset cost it 0.2%). Centring on
/// mean + offset instead removes it; `mean_dyx` uses the same centring.
#[derive(Clone, Copy)]
struct MeanTerms {
    offset: f32,
    mean_dy: f32,
    mean_dyx: f32,
}

impl MeanTerms {
    fn new([sdy, sdyx, sxc]: [f64; 3], inv_std: f32, s: NormShape) -> MeanTerms {
        let count = s.per_channel() as f64;
        let offset = sxc / count;
        // sum(d * (xhat - offset * inv_std)).
        let sdyx_centred = sdyx - offset * inv_std as f64 * sdy;
        MeanTerms { offset: offset as f32, mean_dy: (sdy / count) as f32, mean_dyx: (sdyx_centred / count) as f32 }
    }
}

/// Plane i (of `len` values) of a [N * C, len] tensor.
#[inline(always)]
fn plane_at(v: &[f32], i: usize, len: usize) -> &[f32] {
    &v[i * len..][..len]
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
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = relu_of(affine(x, m, scale, b)));
        } else {
            y.iter_mut().zip(x).for_each(|(y, &x)| *y = affine(x, m, scale, b));
        }
    });
    y
}

/// The normalised value (x - mean) * scale + shift, scale = gamma / std. The fused ReLU backward
/// recomputes it to find where the forward's ReLU passed, so both must use exactly this.
#[inline(always)]
fn affine(x: f32, mean: f32, scale: f32, shift: f32) -> f32 {
    (x - mean) * scale + shift
}

/// max(v, 0) exactly as the ReLU op computes it: NaN survives, -0 becomes 0.
#[inline(always)]
fn relu_of(v: f32) -> f32 {
    if v > 0.0 || v.is_nan() {
        v
    } else {
        0.0
    }
}

/// Where the ReLU op's backward passes the gradient for output (or input) `v`: everywhere but
/// v <= 0, so a NaN passes it, as PyTorch's threshold_backward.
#[inline(always)]
fn relu_passes(v: f32) -> bool {
    v > 0.0 || v.is_nan()
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
    let (mean, inv_std) = batch_statistics(s, x, running_mean, running_var, momentum, eps);
    let y = normalize(s, x, &mean, &inv_std, gamma, beta);
    (y, mean, inv_std)
}

/// The batch's per-channel mean and 1/sqrt(var + eps), after folding them into the running
/// statistics (momentum-weighted, with the unbiased variance, as PyTorch).
fn batch_statistics(
    s: NormShape,
    x: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    momentum: f32,
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
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
    (mean_f, inv_std)
}

/// Training-mode batch norm, then `+ residual` when given, then ReLU: relu(bn(x) + r), a ResNet
/// unit's tail, or relu(bn(x)), DenseNet's pre-activation, written in one pass after the
/// statistics (separately, the add and the ReLU would each read and write the whole tensor
/// again). Updates the running statistics; returns (y, batch mean, batch 1/std).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_relu(
    s: NormShape,
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    momentum: f32,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if s.plane == 1 {
        // [N, C] (or 1x1 maps): the row-wise batch norm, then the add and ReLU over the rows.
        let (mut y, mean, inv_std) = batch_norm_train(s, x, gamma, beta, running_mean, running_var, momentum, eps);
        match residual {
            Some(r) => y.iter_mut().zip(r).for_each(|(y, &r)| *y = relu_of(*y + r)),
            None => y.iter_mut().for_each(|y| *y = relu_of(*y)),
        }
        return (y, mean, inv_std);
    }
    let (mean, inv_std) = batch_statistics(s, x, running_mean, running_var, momentum, eps);
    let mut y = buffers::uninit(x.len());
    let plane_len = s.plane.max(1);
    let planes = y.par_chunks_mut(plane_len).zip(x.par_chunks(plane_len)).enumerate().with_min_len(min_planes(s));
    planes.for_each(|(i, (y, x))| {
        let c = i % s.channels;
        let (m, scale, b) = (mean[c], inv_std[c] * gamma[c], beta[c]);
        match residual {
            Some(r) => {
                let r = &r[i * plane_len..][..plane_len];
                for ((o, &xv), &rv) in y.iter_mut().zip(x).zip(r) {
                    *o = relu_of(affine(xv, m, scale, b) + rv);
                }
            }
            None => y.iter_mut().zip(x).for_each(|(o, &xv)| *o = relu_of(affine(xv, m, scale, b))),
        }
    });
    (y, mean, inv_std)
}

/// Fewest planes per parallel task of a per-plane pass: late layers have 4x4 planes, far too
/// small to hand out one by one.
fn min_planes(s: NormShape) -> usize {
    (1usize << 14).div_ceil(s.plane.max(1))
}

/// What [`batch_norm_relu_backward`] returns: the batch norm's input, weight and bias gradients,
/// and the residual's when there was one.
pub struct BatchNormReluGrads {
    pub dx: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
    pub dresidual: Option<Vec<f32>>,
}

/// Backward of [`batch_norm_train_relu`]: the gradient passes where the forward's ReLU did
/// ([`relu_passes`] of out), then flows through the batch norm with batch statistics; the residual's gradient
/// is that masked dy. Without a residual the mask is recomputed from x with the forward's exact
/// arithmetic instead of read from `out`, one stream fewer in both passes.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    s: NormShape,
    x: &[f32],
    out: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    residual: bool,
) -> BatchNormReluGrads {
    if s.plane == 1 {
        // [N, C] (or 1x1 maps): mask dy, then the row-wise batch norm backward.
        let d: Vec<f32> = out.iter().zip(dy).map(|(&o, &d)| if relu_passes(o) { d } else { 0.0 }).collect();
        let (dx, dgamma, dbeta) = batch_norm_backward(s, x, &d, gamma, mean, inv_std, true);
        return BatchNormReluGrads { dx, dgamma, dbeta, dresidual: residual.then_some(d) };
    }
    let (mut dx, mut dres) = (buffers::uninit(x.len()), residual.then(|| buffers::uninit(x.len())));
    let plane_len = s.plane.max(1);
    let gate = |i: usize| {
        if residual {
            Gate::Positive(plane_at(out, i, plane_len))
        } else {
            // out passes exactly where the normalised value did.
            let c = i % s.channels;
            Gate::Affine { mean: mean[c], scale: inv_std[c] * gamma[c], shift: beta[c] }
        }
    };
    let (dgamma, dbeta) = input_grad(s, x, dy, gate, (gamma, mean, inv_std), &mut dx, dres.as_deref_mut());
    BatchNormReluGrads { dx, dgamma, dbeta, dresidual: dres }
}

/// The gradients of a batch norm with batch statistics for the masked dy (dy where `gate(i)`
/// passes in plane i, else 0): writes dx (and the masked dy into `dres` when given) and returns
/// (dgamma, dbeta). Two passes in memory order: per-plane sums, then per-plane dx.
fn input_grad<'a>(
    s: NormShape,
    x: &[f32],
    dy: &[f32],
    gate: impl Fn(usize) -> Gate<'a> + Sync,
    (gamma, mean, inv_std): (&[f32], &[f32], &[f32]),
    dx: &mut [f32],
    dres: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let level = SimdLevel::current();
    let plane_len = s.plane.max(1);
    let at = |v, i| plane_at(v, i, plane_len);
    let sums = channel_sums(s, |i| {
        let c = i % s.channels;
        lane_sums_dy(level, at(x, i), at(dy, i), gate(i), mean[c], inv_std[c])
    });
    let dbeta: Vec<f32> = sums.iter().map(|s| s[0] as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s[1] as f32).collect();
    let terms: Vec<MeanTerms> = sums.iter().zip(inv_std).map(|(&sums, &inv)| MeanTerms::new(sums, inv, s)).collect();
    let plane_grad = |i: usize, dx: &mut [f32], dr: Option<&mut [f32]>| {
        let c = i % s.channels;
        let inputs = (at(x, i), at(dy, i), gate(i));
        let t = terms[c];
        let coeffs = (gamma[c] * inv_std[c], t.mean_dy, t.mean_dyx);
        let stats = (mean[c], t.offset, inv_std[c]);
        vectorised(
            level,
            #[inline(always)]
            || input_grad_plane(dx, dr, inputs, stats, coeffs),
        );
    };
    let tasks = min_planes(s);
    match dres {
        Some(dr) => dx
            .par_chunks_mut(plane_len)
            .zip(dr.par_chunks_mut(plane_len))
            .enumerate()
            .with_min_len(tasks)
            .for_each(|(i, (dx, dr))| plane_grad(i, dx, Some(dr))),
        None => {
            dx.par_chunks_mut(plane_len).enumerate().with_min_len(tasks).for_each(|(i, dx)| plane_grad(i, dx, None))
        }
    }
    (dgamma, dbeta)
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
    let mut dx = buffers::uninit(x.len());
    if batch_stats {
        let (dgamma, dbeta) = input_grad(s, x, dy, |_| Gate::All, (gamma, mean, inv_std), &mut dx, None);
        return (dx, dgamma, dbeta);
    }
    // With running statistics: dx = dy * gamma * inv_std, and the parameter sums as above.
    let sums = channel_sums(s, |i| {
        let c = i % s.channels;
        let level = SimdLevel::current();
        lane_sums_dy(level, plane_at(x, i, s.plane), plane_at(dy, i, s.plane), Gate::All, mean[c], inv_std[c])
    });
    let dbeta: Vec<f32> = sums.iter().map(|s| s[0] as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s[1] as f32).collect();
    dx.par_chunks_mut(s.plane).zip(dy.par_chunks(s.plane)).enumerate().with_min_len(min_planes(s)).for_each(
        |(i, (dx, dy))| {
            let k = gamma[i % s.channels] * inv_std[i % s.channels];
            dx.iter_mut().zip(dy).for_each(|(o, &d)| *o = k * d);
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
    let mut sums = vec![[0.0f64; 3]; c];
    for (xr, dr) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        for ch in 0..c {
            let centred = xr[ch] - mean[ch];
            let xhat = centred * inv_std[ch];
            sums[ch][0] += dr[ch] as f64;
            sums[ch][1] += (dr[ch] * xhat) as f64;
            sums[ch][2] += centred as f64;
        }
    }
    let dbeta: Vec<f32> = sums.iter().map(|s| s[0] as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s[1] as f32).collect();
    let terms: Vec<MeanTerms> = sums.iter().zip(inv_std).map(|(&sums, &inv)| MeanTerms::new(sums, inv, s)).collect();
    let mut dx = buffers::uninit(x.len());
    for ((o, xr), dr) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c)) {
        for ch in 0..c {
            let k = gamma[ch] * inv_std[ch];
            o[ch] = if batch_stats {
                let t = terms[ch];
                let xhat = ((xr[ch] - mean[ch]) - t.offset) * inv_std[ch];
                k * (dr[ch] - t.mean_dy - xhat * t.mean_dyx)
            } else {
                k * dr[ch]
            };
        }
    }
    (dx, dgamma, dbeta)
}

/// The AVX-512 and AVX2 forms of the two reductions. Lane l of the f64 accumulators is the
/// portable code's partial sum l, updated with the same operations in the same order, so every
/// level gives the same bits. The f32 work is the same 8-lane ymm code at both levels; only the
/// accumulator differs (one zmm of 8 doubles, or two ymm of 4).
#[cfg(target_arch = "x86_64")]
mod vector {
    use super::{Gate, LANES};
    use std::arch::x86_64::*;

    /// Eight f64 partial sums.
    trait Sums: Copy {
        fn zero() -> Self;
        /// Each lane plus the matching lane of `v` widened to f64.
        fn add_widened(self, v: __m256) -> Self;
        /// `(lanes + d, lanes_sq + d * d)` for d = widened v - shift, 0 in lanes from `len` on.
        fn add_shifted(sums: (Self, Self), v: __m256, shift: f64, len: usize) -> (Self, Self);
        /// The lanes added in order, as the portable code's `iter().sum()`.
        fn total(self) -> f64;
    }

    #[derive(Clone, Copy)]
    struct Zmm(__m512d);

    impl Sums for Zmm {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: only reached from functions compiled for AVX-512F.
            Zmm(unsafe { _mm512_setzero_pd() })
        }
        #[inline(always)]
        fn add_widened(self, v: __m256) -> Self {
            // SAFETY: as for `zero`.
            Zmm(unsafe { _mm512_add_pd(self.0, _mm512_cvtps_pd(v)) })
        }
        #[inline(always)]
        fn add_shifted((sum, sum_sq): (Self, Self), v: __m256, shift: f64, len: usize) -> (Self, Self) {
            // SAFETY: as for `zero`.
            unsafe {
                let keep = ((1u32 << len) - 1) as __mmask8;
                let d = _mm512_maskz_sub_pd(keep, _mm512_cvtps_pd(v), _mm512_set1_pd(shift));
                (Zmm(_mm512_add_pd(sum.0, d)), Zmm(_mm512_add_pd(sum_sq.0, _mm512_mul_pd(d, d))))
            }
        }
        #[inline(always)]
        fn total(self) -> f64 {
            let mut lanes = [0.0f64; LANES];
            // SAFETY: as for `zero`; `lanes` holds 8 doubles, the store is unaligned.
            unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), self.0) };
            lanes.iter().sum()
        }
    }

    /// Lanes 0-3 and 4-7.
    #[derive(Clone, Copy)]
    struct Ymm2([__m256d; 2]);

    impl Ymm2 {
        /// v's low and high four floats widened to f64.
        #[inline(always)]
        fn widen(v: __m256) -> [__m256d; 2] {
            // SAFETY: only reached from functions compiled for AVX2.
            unsafe { [_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v))] }
        }
    }

    impl Sums for Ymm2 {
        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: as for `Ymm2::widen`.
            Ymm2([unsafe { _mm256_setzero_pd() }; 2])
        }
        #[inline(always)]
        fn add_widened(self, v: __m256) -> Self {
            let w = Self::widen(v);
            // SAFETY: as for `Ymm2::widen`.
            Ymm2(unsafe { [_mm256_add_pd(self.0[0], w[0]), _mm256_add_pd(self.0[1], w[1])] })
        }
        #[inline(always)]
        fn add_shifted((sum, sum_sq): (Self, Self), v: __m256, shift: f64, len: usize) -> (Self, Self) {
            let w = Self::widen(v);
            let (mut s, mut q) = (sum.0, sum_sq.0);
            // SAFETY: as for `Ymm2::widen`.
            unsafe {
                let sh = _mm256_set1_pd(shift);
                for half in 0..2 {
                    // Lanes from `len` on are +0, as the portable code's untouched lanes.
                    let d = _mm256_and_pd(_mm256_sub_pd(w[half], sh), keep_pd(len, half));
                    s[half] = _mm256_add_pd(s[half], d);
                    q[half] = _mm256_add_pd(q[half], _mm256_mul_pd(d, d));
                }
            }
            (Ymm2(s), Ymm2(q))
        }
        #[inline(always)]
        fn total(self) -> f64 {
            let mut lanes = [0.0f64; LANES];
            // SAFETY: as for `Ymm2::widen`; `lanes` holds 8 doubles, the stores are unaligned.
            unsafe {
                _mm256_storeu_pd(lanes.as_mut_ptr(), self.0[0]);
                _mm256_storeu_pd(lanes.as_mut_ptr().add(4), self.0[1]);
            }
            lanes.iter().sum()
        }
    }

    /// All-ones bits in the lanes of quarter `half` (lanes 4 half .. 4 half + 4) below `len`.
    #[inline(always)]
    fn keep_pd(len: usize, half: usize) -> __m256d {
        let mut lanes = [0u64; 4];
        lanes.iter_mut().enumerate().for_each(|(l, v)| *v = if 4 * half + l < len { u64::MAX } else { 0 });
        // SAFETY: only reached from functions compiled for AVX2; `lanes` holds 4 u64s.
        unsafe { _mm256_castsi256_pd(_mm256_loadu_si256(lanes.as_ptr().cast())) }
    }

    /// [`super::lane_sums_shifted`] with AVX-512F.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn shifted_sums_avx512(values: &[f32], shift: f64) -> (f64, f64) {
        shifted_sums::<Zmm>(values, shift)
    }

    /// [`super::lane_sums_shifted`] with AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn shifted_sums_avx2(values: &[f32], shift: f64) -> (f64, f64) {
        shifted_sums::<Ymm2>(values, shift)
    }

    /// [`super::lane_sums_dy`] with AVX-512F.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dy_sums_avx512(x: &[f32], dy: &[f32], gate: Gate<'_>, mean: f32, inv_std: f32) -> [f64; 3] {
        dy_sums::<Zmm>(x, dy, gate, mean, inv_std)
    }

    /// [`super::lane_sums_dy`] with AVX2.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dy_sums_avx2(x: &[f32], dy: &[f32], gate: Gate<'_>, mean: f32, inv_std: f32) -> [f64; 3] {
        dy_sums::<Ymm2>(x, dy, gate, mean, inv_std)
    }

    #[inline(always)]
    fn shifted_sums<S: Sums>(values: &[f32], shift: f64) -> (f64, f64) {
        let mut sums = (S::zero(), S::zero());
        for start in (0..values.len()).step_by(LANES) {
            let len = LANES.min(values.len() - start);
            sums = S::add_shifted(sums, load8(&values[start..start + len]), shift, len);
        }
        (sums.0.total(), sums.1.total())
    }

    #[inline(always)]
    fn dy_sums<S: Sums>(x: &[f32], dy: &[f32], gate: Gate<'_>, mean: f32, inv_std: f32) -> [f64; 3] {
        // SAFETY (all intrinsics below): AVX, which both callers' target features imply.
        let (m, is, zero) = unsafe { (_mm256_set1_ps(mean), _mm256_set1_ps(inv_std), _mm256_setzero_ps()) };
        let (mut sdy, mut sdyx, mut sxc) = (S::zero(), S::zero(), S::zero());
        for start in (0..x.len()).step_by(LANES) {
            let len = LANES.min(x.len() - start);
            let span = start..start + len;
            // Zero padding past the end: dy = 0 there, so d = 0 whatever the gate says.
            let (xv, dv) = (load8(&x[span.clone()]), load8(&dy[span.clone()]));
            // SAFETY: AVX, as above.
            unsafe {
                let d = match gate {
                    Gate::All => dv,
                    // Not (v <= 0), unordered true: relu_passes(), NaN passing.
                    Gate::Positive(out) => _mm256_and_ps(dv, _mm256_cmp_ps::<_CMP_NLE_UQ>(load8(&out[span]), zero)),
                    Gate::Affine { mean, scale, shift } => {
                        // affine(): (x - mean) * scale + shift, no fused multiply-add.
                        let centred = _mm256_sub_ps(xv, _mm256_set1_ps(mean));
                        let v = _mm256_add_ps(_mm256_mul_ps(centred, _mm256_set1_ps(scale)), _mm256_set1_ps(shift));
                        _mm256_and_ps(dv, _mm256_cmp_ps::<_CMP_NLE_UQ>(v, zero))
                    }
                };
                let centred = _mm256_sub_ps(xv, m);
                let xhat = _mm256_mul_ps(centred, is);
                sdy = sdy.add_widened(d);
                sdyx = sdyx.add_widened(_mm256_mul_ps(d, xhat));
                // Padded lanes have x = 0, not x = mean: masked out.
                let centred = if len == LANES { centred } else { _mm256_and_ps(centred, pad_mask(len)) };
                sxc = sxc.add_widened(centred);
            }
        }
        [sdy.total(), sdyx.total(), sxc.total()]
    }

    /// Up to eight floats, zero-padded to a vector.
    #[inline(always)]
    fn load8(v: &[f32]) -> __m256 {
        if v.len() == LANES {
            // SAFETY: `v` holds 8 floats; the load is unaligned (AVX, as for `dy_sums`).
            return unsafe { _mm256_loadu_ps(v.as_ptr()) };
        }
        let mut lanes = [0.0f32; LANES];
        lanes[..v.len()].copy_from_slice(v);
        // SAFETY: `lanes` holds 8 floats; the load is unaligned.
        unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
    }

    /// All-ones bits in the first `len` lanes, zeros after.
    #[inline(always)]
    fn pad_mask(len: usize) -> __m256 {
        let mut lanes = [0u32; LANES];
        lanes[..len].fill(u32::MAX);
        // SAFETY: `lanes` holds 8 u32s; the load is unaligned.
        unsafe { _mm256_castsi256_ps(_mm256_loadu_si256(lanes.as_ptr().cast())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::elementwise;

    /// Deterministic values in [-1, 1) with a sprinkling of exact zeros.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if i % 17 == 5 {
                    0.0
                } else {
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                }
            })
            .collect()
    }

    /// Shapes with planes that are not whole vectors (tails), one vector, and BatchNorm1d's 1.
    const SHAPES: [NormShape; 4] = [
        NormShape { batch: 3, channels: 5, plane: 63 },
        NormShape { batch: 2, channels: 3, plane: 8 },
        NormShape { batch: 4, channels: 2, plane: 5 },
        NormShape { batch: 6, channels: 7, plane: 1 },
    ];

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn fused_forward_matches_the_separate_ops_bit_for_bit() {
        for s in SHAPES {
            let x = values(s.len(), 1);
            let r = values(s.len(), 2);
            let (gamma, beta) = (values(s.channels, 3), values(s.channels, 4));
            for residual in [None, Some(&r[..])] {
                let (mut rm_a, mut rv_a) = (vec![0.1; s.channels], vec![0.9; s.channels]);
                let (mut rm_b, mut rv_b) = (rm_a.clone(), rv_a.clone());
                let (y, mean, inv) =
                    batch_norm_train_relu(s, &x, residual, &gamma, &beta, &mut rm_a, &mut rv_a, 0.1, 1e-5);
                let (mut y_ref, mean_ref, inv_ref) =
                    batch_norm_train(s, &x, &gamma, &beta, &mut rm_b, &mut rv_b, 0.1, 1e-5);
                if let Some(r) = residual {
                    elementwise::add_assign(&mut y_ref, r);
                }
                let y_ref = elementwise::relu(&y_ref);
                assert_eq!(bits(&y), bits(&y_ref), "{s:?}, residual {}", residual.is_some());
                assert_eq!((bits(&mean), bits(&inv)), (bits(&mean_ref), bits(&inv_ref)));
                assert_eq!((bits(&rm_a), bits(&rv_a)), (bits(&rm_b), bits(&rv_b)));
            }
        }
    }

    #[test]
    fn fused_backward_matches_relu_backward_then_batch_norm_backward() {
        for s in SHAPES {
            let x = values(s.len(), 5);
            let r = values(s.len(), 6);
            let dy = values(s.len(), 7);
            let (gamma, beta) = (values(s.channels, 8), values(s.channels, 9));
            for residual in [false, true] {
                let (mut rm, mut rv) = (vec![0.0; s.channels], vec![1.0; s.channels]);
                let res = residual.then_some(&r[..]);
                let (out, mean, inv) = batch_norm_train_relu(s, &x, res, &gamma, &beta, &mut rm, &mut rv, 0.1, 1e-5);
                let g = batch_norm_relu_backward(s, &x, &out, &dy, &gamma, &beta, &mean, &inv, residual);
                let masked = elementwise::relu_backward(&out, &dy);
                let (dx, dgamma, dbeta) = batch_norm_backward(s, &x, &masked, &gamma, &mean, &inv, true);
                let what = format!("{s:?}, residual {residual}");
                assert_eq!(bits(&g.dx), bits(&dx), "dx, {what}");
                assert_eq!(bits(&g.dgamma), bits(&dgamma), "dgamma, {what}");
                assert_eq!(bits(&g.dbeta), bits(&dbeta), "dbeta, {what}");
                assert_eq!(g.dresidual.as_deref().map(bits), residual.then(|| bits(&masked)), "dresidual, {what}");
                // Some gradient was actually cut by the mask, and some passed.
                assert!(masked.iter().zip(&dy).any(|(m, d)| *m == 0.0 && *d != 0.0), "{what}");
                assert!(masked.iter().any(|m| *m != 0.0), "{what}");
            }
        }
    }

    #[test]
    fn a_nan_output_passes_the_gradient_as_the_relu_op_does() {
        let s = NormShape { batch: 2, channels: 1, plane: 9 };
        let mut out = values(s.len(), 10);
        out[3] = f32::NAN;
        let dy = vec![1.0; s.len()];
        let x = values(s.len(), 11);
        let g = batch_norm_relu_backward(s, &x, &out, &dy, &[1.0], &[0.0], &[0.0], &[1.0], true);
        let masked = elementwise::relu_backward(&out, &dy);
        assert_eq!(masked[3], 1.0);
        assert_eq!(bits(g.dresidual.as_deref().unwrap()), bits(&masked));
    }

    #[test]
    fn reductions_give_the_same_bits_at_every_simd_level() {
        let levels = SimdLevel::supported();
        for len in [1, 7, 8, 9, 16, 31, 64, 100] {
            let x = values(len, 12);
            let dy = values(len, 13);
            let out = values(len, 14);
            let gates = [Gate::All, Gate::Positive(&out), Gate::Affine { mean: 0.1, scale: 1.5, shift: -0.2 }];
            for level in &levels {
                let expect = lane_sums_shifted(SimdLevel::Portable, &x, 0.25);
                assert_eq!(lane_sums_shifted(*level, &x, 0.25), expect, "shifted sums, {level:?}, {len}");
                for gate in gates {
                    let expect = lane_sums_dy(SimdLevel::Portable, &x, &dy, gate, 0.05, 2.0);
                    assert_eq!(lane_sums_dy(*level, &x, &dy, gate, 0.05, 2.0), expect, "dy sums, {level:?}, {len}");
                }
            }
        }
    }

    /// dx of a batch norm in f64 from its definition (biased variance, eps 1e-5).
    fn dx_reference(x: &[f32], dy: &[f32]) -> Vec<f64> {
        let m = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / m;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / m;
        let inv = 1.0 / (var + 1e-5).sqrt();
        let xhat: Vec<f64> = x.iter().map(|&v| (v as f64 - mean) * inv).collect();
        let mean_dy = dy.iter().map(|&d| d as f64).sum::<f64>() / m;
        let mean_dyx = dy.iter().zip(&xhat).map(|(&d, h)| d as f64 * h).sum::<f64>() / m;
        dy.iter().zip(&xhat).map(|(&d, h)| inv * (d as f64 - mean_dy - h * mean_dyx)).collect()
    }

    #[test]
    fn input_gradient_keeps_precision_with_two_values_far_from_zero() {
        // Two values per channel, spread 0.05 around 2.15: dx is 2% of dy, a small difference of
        // large terms, and the f32 mean's rounding used to cost it 0.24% (found by the
        // ops_reference property test). Both the plane path and the row path (BatchNorm1d).
        let x = [2.1267414f32, 2.1740081];
        let dy = [-0.62f32, 0.91];
        let want = dx_reference(&x, &dy);
        let check = |s: NormShape| {
            let (mut rm, mut rv) = (vec![0.0], vec![1.0]);
            let (_, mean, inv) = batch_norm_train(s, &x, &[1.0], &[0.0], &mut rm, &mut rv, 0.1, 1e-5);
            let (dx, _, _) = batch_norm_backward(s, &x, &dy, &[1.0], &mean, &inv, true);
            for (got, want) in dx.iter().zip(&want) {
                assert!((*got as f64 - want).abs() <= 1e-4 * want.abs(), "{s:?}: dx {got} vs {want}");
            }
        };
        check(NormShape { batch: 1, channels: 1, plane: 2 });
        check(NormShape { batch: 2, channels: 1, plane: 1 });
    }

    #[test]
    fn one_pass_variance_keeps_precision_when_the_mean_dwarfs_the_spread() {
        let s = NormShape { batch: 4, channels: 2, plane: 1000 };
        // Mean near 1000 and 5000, spread about 0.01.
        let x: Vec<f32> =
            values(s.len(), 15).iter().enumerate().map(|(i, v)| [1000.0, 5000.0][i / 1000 % 2] + 0.01 * v).collect();
        let (mean, var) = channel_mean_var(s, &x);
        for c in 0..2 {
            let vals: Vec<f64> =
                (0..s.batch).flat_map(|n| plane(&x, s, n, c).iter().map(|&v| v as f64)).collect::<Vec<_>>();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            assert!((mean[c] - m).abs() <= 1e-12 * m.abs(), "mean {} vs {m}", mean[c]);
            assert!((var[c] - v).abs() <= 1e-9 * v, "variance {} vs {v}", var[c]);
        }
    }
}
