//! Shared helpers for the op-level tests: deterministic random data, naive reference
//! implementations (plain loops, f64 accumulation) of every differentiable op, a tolerance-based
//! comparison, and a finite-difference gradient checker that goes through the public autograd API.
//!
//! Every reference follows PyTorch's definition of the op (see each function's doc comment).

#![allow(dead_code)]

use cxr::tensor::init::Rng;
use cxr::Tensor;

// ---- random data ---------------------------------------------------------------------------------

/// `n` values uniform in [lo, hi) from `seed` (deterministic).
pub fn rand_vec(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (lo as f64 + (hi - lo) as f64 * rng.uniform()) as f32).collect()
}

/// `n` values from the small integer set {-k..=k} (scaled by `step`): many exact ties.
pub fn rand_ties(n: usize, seed: u64, k: i64, step: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.below((2 * k + 1) as u64) as i64 - k) as f32 * step).collect()
}

/// `n` pairwise-distinct values, a random permutation of `offset + spacing * i`: arg-max and
/// ReLU sign are stable under perturbations smaller than spacing / 2.
pub fn distinct_vec(n: usize, seed: u64, spacing: f32, offset: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    idx.into_iter().map(|i| offset + spacing * i as f32).collect()
}

/// Values uniform in [0.05, 1.5) with a random sign: never within 0.05 of zero (ReLU's kink).
pub fn away_from_zero(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mag = 0.05 + 1.45 * rng.uniform();
            let sign = if rng.below(2) == 0 { -1.0 } else { 1.0 };
            (sign * mag) as f32
        })
        .collect()
}

/// A CPU leaf tensor from host data.
pub fn tensor(data: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(data, dims.to_vec()).expect("tensor from host data")
}

/// A CPU leaf tensor of uniform [-1, 1) values.
pub fn rand_tensor(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    tensor(rand_vec(n, seed, -1.0, 1.0), dims)
}

/// A CPU leaf tensor that requires grad.
pub fn leaf(data: Vec<f32>, dims: &[usize]) -> Tensor {
    tensor(data, dims).with_grad().expect("with_grad on a leaf")
}

/// Host copy of a tensor.
pub fn host(t: &Tensor) -> Vec<f32> {
    t.to_vec().expect("to_vec")
}

/// Host copy of a tensor's accumulated gradient; panics when there is none.
pub fn grad_of(t: &Tensor) -> Vec<f32> {
    host(&t.grad().expect("tensor has no gradient"))
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// ---- comparison ----------------------------------------------------------------------------------

/// Largest |a - e| / max(|e|, 1e-12) (relative error) over the two slices.
pub fn max_rel_err(actual: &[f32], expected: &[f64]) -> f64 {
    actual.iter().zip(expected).map(|(&a, &e)| (a as f64 - e).abs() / e.abs().max(1e-12)).fold(0.0, f64::max)
}

/// Panics unless every |actual - expected| <= atol + rtol * |expected| (and shapes agree, and
/// NaN/inf appear in the same places). `what` names the comparison in the message.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], rtol: f64, atol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length {} vs expected {}", actual.len(), expected.len());
    let mut bad = Vec::new();
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let a = a as f64;
        let ok = if e.is_nan() {
            a.is_nan()
        } else if e.is_finite() {
            a.is_finite() && (a - e).abs() <= atol + rtol * e.abs()
        } else {
            a == e
        };
        if !ok {
            bad.push((i, a, e));
        }
    }
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().take(8).map(|(i, a, e)| format!("[{i}] got {a:e} want {e:e}")).collect();
        panic!(
            "{what}: {} of {} elements outside atol {atol:e} + rtol {rtol:e}: {}",
            bad.len(),
            actual.len(),
            shown.join(", ")
        );
    }
}

/// [`assert_close`] for two f32 slices.
#[track_caller]
pub fn assert_close32(what: &str, actual: &[f32], expected: &[f32], rtol: f64, atol: f64) {
    assert_close(what, actual, &to_f64(expected), rtol, atol);
}

// ---- reference implementations (plain loops, f64) ------------------------------------------------

/// torch.relu: max(x, 0), NaN propagates.
pub fn relu_ref(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| if v.is_nan() || v > 0.0 { v as f64 } else { 0.0 }).collect()
}

/// d relu (PyTorch's threshold_backward): 0 where relu(x) <= 0, else dy (so dy passes at NaN;
/// the subgradient at 0 is 0).
pub fn relu_backward_ref(x: &[f32], dy: &[f32]) -> Vec<f64> {
    x.iter().zip(dy).map(|(&x, &d)| if x <= 0.0 { 0.0 } else { d as f64 }).collect()
}

pub fn sigmoid_ref(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| 1.0 / (1.0 + (-(v as f64)).exp())).collect()
}

pub fn sigmoid_backward_ref(x: &[f32], dy: &[f32]) -> Vec<f64> {
    sigmoid_ref(x).iter().zip(dy).map(|(&s, &d)| d as f64 * s * (1.0 - s)).collect()
}

pub fn add_ref(a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter().zip(b).map(|(&a, &b)| a as f64 + b as f64).collect()
}

pub fn mul_ref(a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).collect()
}

/// C[m, n] = A[m, k] B[k, n].
pub fn matmul_ref(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// Transpose of x[rows, cols].
pub fn transpose_ref(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// torch.nn.functional.linear: y[r, o] = sum_i x[r, i] w[o, i] + b[o].
pub fn linear_ref(x: &[f32], w: &[f32], b: Option<&[f32]>, rows: usize, inf: usize, outf: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * outf];
    for r in 0..rows {
        for o in 0..outf {
            let mut acc = b.map_or(0.0, |b| b[o] as f64);
            for i in 0..inf {
                acc += x[r * inf + i] as f64 * w[o * inf + i] as f64;
            }
            y[r * outf + o] = acc;
        }
    }
    y
}

/// Gradients of linear: (dx = dy W, dW = dy^T x, db = column sums of dy).
pub fn linear_backward_ref(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    rows: usize,
    inf: usize,
    outf: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; rows * inf];
    let mut dw = vec![0.0; outf * inf];
    let mut db = vec![0.0; outf];
    for r in 0..rows {
        for o in 0..outf {
            let d = dy[r * outf + o] as f64;
            db[o] += d;
            for i in 0..inf {
                dx[r * inf + i] += d * w[o * inf + i] as f64;
                dw[o * inf + i] += d * x[r * inf + i] as f64;
            }
        }
    }
    (dx, dw, db)
}

/// An NCHW shape.
#[derive(Debug, Clone, Copy)]
pub struct Nchw {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Nchw {
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    pub fn dims(&self) -> Vec<usize> {
        vec![self.n, self.c, self.h, self.w]
    }
    pub fn at(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.c + c) * self.h + y) * self.w + x
    }
}

#[allow(clippy::too_many_arguments)]
/// torch.nn.functional.conv2d (dilation 1, groups 1), square stride and padding; w [O, C, kh, kw].
pub fn conv2d_ref(
    x: &[f32],
    s: Nchw,
    w: &[f32],
    out_c: usize,
    kh: usize,
    kw: usize,
    b: Option<&[f32]>,
    stride: usize,
    pad: usize,
) -> (Vec<f64>, Nchw) {
    let oh = (s.h + 2 * pad - kh) / stride + 1;
    let ow = (s.w + 2 * pad - kw) / stride + 1;
    let o = Nchw { n: s.n, c: out_c, h: oh, w: ow };
    let mut y = vec![0.0; o.len()];
    for n in 0..s.n {
        for co in 0..out_c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[co] as f64);
                    for ci in 0..s.c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                acc += x[s.at(n, ci, iy as usize, ix as usize)] as f64
                                    * w[((co * s.c + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    y[o.at(n, co, oy, ox)] = acc;
                }
            }
        }
    }
    (y, o)
}

/// Reference batch norm in training mode (PyTorch): normalise with the biased batch variance,
/// update running_mean/var with `momentum`, the running variance with the UNBIASED batch variance.
/// `plane` is H*W (1 for BatchNorm1d). Returns (y, new running mean, new running var).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_ref(
    x: &[f32],
    n: usize,
    c: usize,
    plane: usize,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    momentum: f64,
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mean, var) = bn_stats_ref(x, n, c, plane);
    let m = (n * plane) as f64;
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..plane {
                let i = (b * c + ch) * plane + p;
                y[i] = (x[i] as f64 - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] as f64 + beta[ch] as f64;
            }
        }
    }
    let rm = (0..c).map(|ch| (1.0 - momentum) * running_mean[ch] as f64 + momentum * mean[ch]).collect();
    let rv = (0..c).map(|ch| (1.0 - momentum) * running_var[ch] as f64 + momentum * var[ch] * m / (m - 1.0)).collect();
    (y, rm, rv)
}

/// Per-channel mean and BIASED variance of x [N, C, plane].
pub fn bn_stats_ref(x: &[f32], n: usize, c: usize, plane: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (n * plane) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals = (0..n).flat_map(|b| (0..plane).map(move |p| (b * c + ch) * plane + p));
        mean[ch] = vals.clone().map(|i| x[i] as f64).sum::<f64>() / m;
        var[ch] = vals.map(|i| (x[i] as f64 - mean[ch]).powi(2)).sum::<f64>() / m;
    }
    (mean, var)
}

/// Reference batch norm in eval mode: normalise with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval_ref(
    x: &[f32],
    n: usize,
    c: usize,
    plane: usize,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f64,
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let inv = 1.0 / (running_var[ch] as f64 + eps).sqrt();
            for p in 0..plane {
                let i = (b * c + ch) * plane + p;
                y[i] = (x[i] as f64 - running_mean[ch] as f64) * inv * gamma[ch] as f64 + beta[ch] as f64;
            }
        }
    }
    y
}

/// Training-mode batch-norm gradients (dx, dgamma, dbeta), the standard closed form:
/// dx = gamma / sqrt(var + eps) / M * (M dy - sum dy - xhat sum(dy xhat)).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_backward_ref(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    plane: usize,
    gamma: &[f32],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mean, var) = bn_stats_ref(x, n, c, plane);
    let m = (n * plane) as f64;
    let mut dx = vec![0.0; x.len()];
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    let idx = |b: usize, ch: usize, p: usize| (b * c + ch) * plane + p;
    for ch in 0..c {
        let inv = 1.0 / (var[ch] + eps).sqrt();
        let (mut sdy, mut sdyx) = (0.0, 0.0);
        for b in 0..n {
            for p in 0..plane {
                let i = idx(b, ch, p);
                sdy += dy[i] as f64;
                sdyx += dy[i] as f64 * (x[i] as f64 - mean[ch]) * inv;
            }
        }
        dgamma[ch] = sdyx;
        dbeta[ch] = sdy;
        for b in 0..n {
            for p in 0..plane {
                let i = idx(b, ch, p);
                let xhat = (x[i] as f64 - mean[ch]) * inv;
                dx[i] = gamma[ch] as f64 * inv / m * (m * dy[i] as f64 - sdy - xhat * sdyx);
            }
        }
    }
    (dx, dgamma, dbeta)
}

/// Output size of a floor-mode pool/conv window.
pub fn out_size(input: usize, kernel: usize, stride: usize, pad: usize) -> usize {
    (input + 2 * pad - kernel) / stride + 1
}

/// Max pool (PyTorch, floor mode): padding acts as -inf; returns the output and, per output, the
/// flat input index of the FIRST maximum of its window in row-major window order.
pub fn max_pool2d_ref(x: &[f32], s: Nchw, k: usize, stride: usize, pad: usize) -> (Vec<f64>, Vec<usize>, Nchw) {
    let o = Nchw { n: s.n, c: s.c, h: out_size(s.h, k, stride, pad), w: out_size(s.w, k, stride, pad) };
    let mut y = vec![0.0; o.len()];
    let mut arg = vec![usize::MAX; o.len()];
    for n in 0..s.n {
        for c in 0..s.c {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let mut best = f64::NEG_INFINITY;
                    let mut best_i = usize::MAX;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue; // padding: -inf, never the maximum
                            }
                            let i = s.at(n, c, iy as usize, ix as usize);
                            if best_i == usize::MAX || (x[i] as f64) > best {
                                best = x[i] as f64;
                                best_i = i;
                            }
                        }
                    }
                    y[o.at(n, c, oy, ox)] = best;
                    arg[o.at(n, c, oy, ox)] = best_i;
                }
            }
        }
    }
    (y, arg, o)
}

/// Max pool backward: each output gradient is added to its window's first maximum.
pub fn max_pool2d_backward_ref(argmax: &[usize], dy: &[f32], input_len: usize) -> Vec<f64> {
    let mut dx = vec![0.0; input_len];
    for (&i, &d) in argmax.iter().zip(dy) {
        dx[i] += d as f64;
    }
    dx
}

/// Average pool (PyTorch defaults: floor mode, count_include_pad=True so the divisor is k*k).
pub fn avg_pool2d_ref(x: &[f32], s: Nchw, k: usize, stride: usize, pad: usize) -> (Vec<f64>, Nchw) {
    let o = Nchw { n: s.n, c: s.c, h: out_size(s.h, k, stride, pad), w: out_size(s.w, k, stride, pad) };
    let mut y = vec![0.0; o.len()];
    for n in 0..s.n {
        for c in 0..s.c {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let mut acc = 0.0;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize {
                                acc += x[s.at(n, c, iy as usize, ix as usize)] as f64;
                            }
                        }
                    }
                    y[o.at(n, c, oy, ox)] = acc / (k * k) as f64;
                }
            }
        }
    }
    (y, o)
}

/// Average pool backward: dy / (k*k) spread over each window's in-bounds inputs.
pub fn avg_pool2d_backward_ref(dy: &[f32], s: Nchw, k: usize, stride: usize, pad: usize) -> Vec<f64> {
    let o = Nchw { n: s.n, c: s.c, h: out_size(s.h, k, stride, pad), w: out_size(s.w, k, stride, pad) };
    let mut dx = vec![0.0; s.len()];
    for n in 0..s.n {
        for c in 0..s.c {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let d = dy[o.at(n, c, oy, ox)] as f64 / (k * k) as f64;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            if iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize {
                                dx[s.at(n, c, iy as usize, ix as usize)] += d;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// [N, C, H, W] -> [N, C] plane means.
pub fn global_avg_pool_ref(x: &[f32], s: Nchw) -> Vec<f64> {
    let plane = s.h * s.w;
    (0..s.n * s.c)
        .map(|r| x[r * plane..(r + 1) * plane].iter().map(|&v| v as f64).sum::<f64>() / plane as f64)
        .collect()
}

/// torch.cat(parts, dim=1) of [N, C_i, plane] blocks.
pub fn cat_channels_ref(parts: &[(&[f32], usize)], n: usize, plane: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for b in 0..n {
        for &(data, c) in parts {
            for ch in 0..c {
                for p in 0..plane {
                    out.push(data[(b * c + ch) * plane + p]);
                }
            }
        }
    }
    out
}

/// Inverted dropout with the crate's documented mask: element i is dropped when
/// Philox(seed, i) < p, else scaled by 1 / (1 - p) (computed as x * (1 / (1 - p)) in f32).
pub fn dropout_ref(x: &[f32], p: f32, seed: u64) -> Vec<f64> {
    let keep = 1.0 / (1.0 - p);
    x.iter()
        .enumerate()
        .map(|(i, &v)| if cxr::backend::philox::uniform(seed, i as u64) < p { 0.0 } else { (v * keep) as f64 })
        .collect()
}

/// log(1 + exp(v)) in f64 without overflow.
pub fn softplus(v: f64) -> f64 {
    if v > 0.0 {
        v + (-v).exp().ln_1p()
    } else {
        v.exp().ln_1p()
    }
}

/// torch.nn.BCEWithLogitsLoss(pos_weight)(x, t), mean reduction, evaluated in f64 as
/// mean over elements of  -[pw[c] t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]
/// = pw[c] t softplus(-x) + (1 - t) softplus(x).
pub fn bce_ref(x: &[f32], t: &[f32], pos_weight: Option<&[f32]>, classes: usize) -> f64 {
    let mut total = 0.0;
    for (i, (&x, &t)) in x.iter().zip(t).enumerate() {
        let (x, t) = (x as f64, t as f64);
        let pw = pos_weight.map_or(1.0, |p| p[i % classes] as f64);
        total += pw * t * softplus(-x) + (1.0 - t) * softplus(x);
    }
    total / x.len() as f64
}

/// d(mean BCE)/dx = [(1 - t) sigmoid(x) - pw t sigmoid(-x)] / len.
pub fn bce_backward_ref(x: &[f32], t: &[f32], pos_weight: Option<&[f32]>, classes: usize) -> Vec<f64> {
    let len = x.len() as f64;
    x.iter()
        .zip(t)
        .enumerate()
        .map(|(i, (&x, &t))| {
            let (x, t) = (x as f64, t as f64);
            let pw = pos_weight.map_or(1.0, |p| p[i % classes] as f64);
            let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
            ((1.0 - t) * sig(x) - pw * t * sig(-x)) / len
        })
        .collect()
}

// ---- finite-difference gradient check ------------------------------------------------------------

/// One input of a function under [`gradcheck`]: host data, shape, and whether it is a leaf that
/// requires grad (whose gradient is checked) or a constant.
#[derive(Debug, Clone)]
pub struct GradInput {
    pub data: Vec<f32>,
    pub dims: Vec<usize>,
    pub requires_grad: bool,
}

/// An input whose gradient is checked.
pub fn var(data: Vec<f32>, dims: &[usize]) -> GradInput {
    GradInput { data, dims: dims.to_vec(), requires_grad: true }
}

/// A constant input (no gradient; checked to receive none).
pub fn constant(data: Vec<f32>, dims: &[usize]) -> GradInput {
    GradInput { data, dims: dims.to_vec(), requires_grad: false }
}

/// Finite-difference step and acceptance: each element passes when
/// |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
}

/// For ops that are (piecewise) linear in each input element, where central differences are exact
/// up to f32 rounding of the forward: step 1e-2, atol 5e-4, rtol 1e-3.
pub const LINEAR_TOL: Tol = Tol { eps: 1e-2, atol: 5e-4, rtol: 1e-3 };
/// For smooth nonlinear ops (sigmoid, batch norm, BCE, chains): step 1e-2 (truncation error
/// O(eps^2)), atol 1e-3, rtol 1e-2.
pub const SMOOTH_TOL: Tol = Tol { eps: 1e-2, atol: 1e-3, rtol: 1e-2 };

/// Checks the gradients autograd computes for `f` against central differences.
///
/// The scalar checked is L = sum_k f(x)_k r_k for a fixed random r (uniform [-1, 1), from `seed`):
/// the analytic side runs `f` on leaves (those with `requires_grad` made with `.with_grad()`) and
/// `backward_with(r)`, then reads `Tensor::grad()`; the numeric side perturbs every element of every
/// checked input by +-eps on the host, evaluates `f` under `no_grad`, and forms L in f64 from
/// `to_vec()`: dL/dx_j = (L(x_j + e) - L(x_j - e)) / (actual step) in f64. Constant inputs must
/// receive no gradient. Returns the largest absolute discrepancy seen.
#[track_caller]
pub fn gradcheck<F>(name: &str, inputs: &[GradInput], tol: Tol, seed: u64, f: F) -> f64
where
    F: Fn(&[Tensor]) -> cxr::Result<Tensor>,
{
    // Analytic gradients through the public autograd API.
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|i| {
            let t = tensor(i.data.clone(), &i.dims);
            if i.requires_grad {
                t.with_grad().expect("with_grad")
            } else {
                t
            }
        })
        .collect();
    let y = f(&leaves).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    assert!(y.requires_grad(), "{name}: output does not require grad");
    let r = rand_vec(y.numel(), seed, -1.0, 1.0);
    let r_t = Tensor::from_vec(r.clone(), y.shape().clone()).expect("seed tensor");
    y.backward_with(&r_t).unwrap_or_else(|e| panic!("{name}: backward failed: {e}"));
    drop(y);

    let loss = |data: &[Vec<f32>]| -> f64 {
        let _guard = cxr::no_grad();
        let ts: Vec<Tensor> = data.iter().zip(inputs).map(|(d, i)| tensor(d.clone(), &i.dims)).collect();
        let y = f(&ts).unwrap_or_else(|e| panic!("{name}: forward (numeric) failed: {e}"));
        assert!(!y.requires_grad(), "{name}: output under no_grad requires grad");
        host(&y).iter().zip(&r).map(|(&v, &r)| v as f64 * r as f64).sum()
    };

    let mut worst = 0.0f64;
    let mut data: Vec<Vec<f32>> = inputs.iter().map(|i| i.data.clone()).collect();
    for (k, (input, leaf)) in inputs.iter().zip(&leaves).enumerate() {
        if !input.requires_grad {
            assert!(leaf.grad().is_none(), "{name}: constant input {k} received a gradient");
            continue;
        }
        let g = leaf.grad().unwrap_or_else(|| panic!("{name}: input {k} has no gradient"));
        assert_eq!(g.dims(), &input.dims[..], "{name}: gradient {k} has the wrong shape");
        let analytic = host(&g);
        let mut failures = Vec::new();
        for j in 0..input.data.len() {
            let x0 = input.data[j];
            let xp = (x0 as f64 + tol.eps) as f32;
            let xm = (x0 as f64 - tol.eps) as f32;
            data[k][j] = xp;
            let lp = loss(&data);
            data[k][j] = xm;
            let lm = loss(&data);
            data[k][j] = x0;
            let numeric = (lp - lm) / (xp as f64 - xm as f64);
            let a = analytic[j] as f64;
            let err = (a - numeric).abs();
            worst = worst.max(err);
            if err.is_nan() || err > tol.atol + tol.rtol * a.abs().max(numeric.abs()) {
                failures.push(format!("[{j}] analytic {a:.6e} numeric {numeric:.6e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{name}: input {k} {:?}: {} of {} gradient elements disagree (eps {}, atol {}, rtol {}): {}",
            input.dims,
            failures.len(),
            input.data.len(),
            tol.eps,
            tol.atol,
            tol.rtol,
            failures.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    worst
}
