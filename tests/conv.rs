//! Convolution kernels against a plain-loop f64 reference, finite differences and the adjoint
//! identities, for every SIMD level the CPU supports.

use cxr::backend::cpu::conv::{conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
use cxr::backend::cpu::simd::SimdLevel;
use cxr::backend::geometry::Conv2dGeometry;
use proptest::prelude::*;

/// Kernel results may differ from the f64 reference by this much relative to the sum of the
/// absolute values of the terms that make up each output (f32 rounding of up to a few hundred
/// terms, summed in any order).
const REL_TOL: f64 = 1e-4;

/// A small deterministic generator (xorshift) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next_f32()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.next_f32() + 1.0) * 0.5 * n as f32) as usize % n.max(1)
    }
}

#[allow(clippy::too_many_arguments)]
fn geometry(n: usize, ci: usize, co: usize, h: usize, w: usize, k: usize, s: usize, p: usize) -> Conv2dGeometry {
    Conv2dGeometry {
        batch: n,
        in_channels: ci,
        out_channels: co,
        in_h: h,
        in_w: w,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pad_h: p,
        pad_w: p,
    }
}

/// The input pixel that output (oy, ox) sees through kernel tap (ky, kx), if not in the padding.
fn tap(g: &Conv2dGeometry, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride_h + ky).checked_sub(g.pad_h)?;
    let ix = (ox * g.stride_w + kx).checked_sub(g.pad_w)?;
    (iy < g.in_h && ix < g.in_w).then_some((iy, ix))
}

fn x_at(g: &Conv2dGeometry, x: &[f32], n: usize, c: usize, iy: usize, ix: usize) -> f64 {
    x[((n * g.in_channels + c) * g.in_h + iy) * g.in_w + ix] as f64
}
fn w_at(g: &Conv2dGeometry, w: &[f32], co: usize, ci: usize, ky: usize, kx: usize) -> f64 {
    w[((co * g.in_channels + ci) * g.kernel_h + ky) * g.kernel_w + kx] as f64
}
fn y_at(g: &Conv2dGeometry, y: &[f32], n: usize, co: usize, oy: usize, ox: usize) -> f64 {
    y[((n * g.out_channels + co) * g.out_h() + oy) * g.out_w() + ox] as f64
}

/// Reference y[n, co, oy, ox] and the sum of |terms|.
fn ref_forward(g: &Conv2dGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, idx: [usize; 4]) -> (f64, f64) {
    let [n, co, oy, ox] = idx;
    let b = bias.map_or(0.0, |b| b[co] as f64);
    let (mut acc, mut mag) = (b, b.abs());
    for ci in 0..g.in_channels {
        for ky in 0..g.kernel_h {
            for kx in 0..g.kernel_w {
                if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                    let t = x_at(g, x, n, ci, iy, ix) * w_at(g, w, co, ci, ky, kx);
                    acc += t;
                    mag += t.abs();
                }
            }
        }
    }
    (acc, mag)
}

/// Reference dx[n, ci, iy, ix] and the sum of |terms|.
fn ref_backward_input(g: &Conv2dGeometry, dy: &[f32], w: &[f32], idx: [usize; 4]) -> (f64, f64) {
    let [n, ci, iy, ix] = idx;
    let (mut acc, mut mag) = (0.0, 0.0);
    for co in 0..g.out_channels {
        for oy in 0..g.out_h() {
            for ox in 0..g.out_w() {
                for ky in 0..g.kernel_h {
                    for kx in 0..g.kernel_w {
                        if tap(g, oy, ox, ky, kx) == Some((iy, ix)) {
                            let t = y_at(g, dy, n, co, oy, ox) * w_at(g, w, co, ci, ky, kx);
                            acc += t;
                            mag += t.abs();
                        }
                    }
                }
            }
        }
    }
    (acc, mag)
}

/// Reference dw[co, ci, ky, kx] and the sum of |terms|.
fn ref_backward_weight(g: &Conv2dGeometry, x: &[f32], dy: &[f32], idx: [usize; 4]) -> (f64, f64) {
    let [co, ci, ky, kx] = idx;
    let (mut acc, mut mag) = (0.0, 0.0);
    for n in 0..g.batch {
        for oy in 0..g.out_h() {
            for ox in 0..g.out_w() {
                if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                    let t = x_at(g, x, n, ci, iy, ix) * y_at(g, dy, n, co, oy, ox);
                    acc += t;
                    mag += t.abs();
                }
            }
        }
    }
    (acc, mag)
}

/// Unflattens an NCHW-style index.
fn unflatten(i: usize, dims: [usize; 4]) -> [usize; 4] {
    [i / (dims[1] * dims[2] * dims[3]), i / (dims[2] * dims[3]) % dims[1], i / dims[3] % dims[2], i % dims[3]]
}

/// Checks `got[i]` against `reference(idx)` for the flat indices `which`.
fn check(
    what: &str,
    got: &[f32],
    dims: [usize; 4],
    which: impl Iterator<Item = usize>,
    reference: impl Fn([usize; 4]) -> (f64, f64),
) {
    for i in which {
        let idx = unflatten(i, dims);
        let (want, mag) = reference(idx);
        let err = (got[i] as f64 - want).abs();
        assert!(
            err <= REL_TOL * mag + 1e-6,
            "{what} at {idx:?}: got {} want {want} (|terms| {mag}, err {err})",
            got[i]
        );
    }
}

struct Case {
    g: Conv2dGeometry,
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    dy: Vec<f32>,
}

impl Case {
    fn new(g: Conv2dGeometry, with_bias: bool, seed: u64) -> Case {
        let mut rng = Rng(seed | 1);
        let bias = with_bias.then(|| rng.vec(g.out_channels));
        Case { x: rng.vec(g.input_len()), w: rng.vec(g.weight_len()), dy: rng.vec(g.output_len()), bias, g }
    }
    fn x_dims(&self) -> [usize; 4] {
        [self.g.batch, self.g.in_channels, self.g.in_h, self.g.in_w]
    }
    fn y_dims(&self) -> [usize; 4] {
        [self.g.batch, self.g.out_channels, self.g.out_h(), self.g.out_w()]
    }
    fn w_dims(&self) -> [usize; 4] {
        [self.g.out_channels, self.g.in_channels, self.g.kernel_h, self.g.kernel_w]
    }
    /// Runs the three GEMM-based kernels; outputs start as NaN to prove they are overwritten.
    fn run(&self, level: SimdLevel) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let g = &self.g;
        let mut y = vec![f32::NAN; g.output_len()];
        conv2d_forward(level, g, &self.x, &self.w, self.bias.as_deref(), &mut y);
        let mut dx = vec![f32::NAN; g.input_len()];
        conv2d_backward_input(level, g, &self.dy, &self.w, &mut dx);
        let mut dw = vec![f32::NAN; g.weight_len()];
        conv2d_backward_weight(level, g, &self.x, &self.dy, &mut dw);
        (y, dx, dw)
    }
    /// Compares the outputs at the flat indices chosen by `pick(len)` with the reference.
    fn check_against_reference(&self, level: SimdLevel, pick: impl Fn(usize) -> Vec<usize>) {
        let (g, bias) = (&self.g, self.bias.as_deref());
        let (y, dx, dw) = self.run(level);
        let tag = |op: &str| format!("{op} {:?} {g:?}", level);
        check(&tag("forward"), &y, self.y_dims(), pick(y.len()).into_iter(), |i| {
            ref_forward(g, &self.x, &self.w, bias, i)
        });
        check(&tag("backward_input"), &dx, self.x_dims(), pick(dx.len()).into_iter(), |i| {
            ref_backward_input(g, &self.dy, &self.w, i)
        });
        check(&tag("backward_weight"), &dw, self.w_dims(), pick(dw.len()).into_iter(), |i| {
            ref_backward_weight(g, &self.x, &self.dy, i)
        });
    }
}

fn all(len: usize) -> Vec<usize> {
    (0..len).collect()
}

/// Reference bias gradient: f64 sums per channel.
fn check_bias(g: &Conv2dGeometry, dy: &[f32]) {
    let mut db = vec![f32::NAN; g.out_channels];
    conv2d_backward_bias(g, dy, &mut db);
    let plane = g.out_h() * g.out_w();
    for (co, &got) in db.iter().enumerate() {
        let terms = (0..g.batch).flat_map(|n| dy[(n * g.out_channels + co) * plane..][..plane].iter());
        let (want, mag) = terms.fold((0.0f64, 0.0f64), |(s, m), &v| (s + v as f64, m + (v as f64).abs()));
        assert!((got as f64 - want).abs() <= 1e-6 * mag + 1e-7, "bias grad {co}: {got} vs {want}");
    }
}

/// Random valid geometries as the brief's ranges describe them.
fn arb_geometry() -> impl Strategy<Value = (Conv2dGeometry, bool, u64)> {
    (
        1usize..=3,
        1usize..=9,
        1usize..=9,
        1usize..=13,
        1usize..=13,
        prop::sample::select(vec![1usize, 3, 5, 7]),
        1usize..=3,
        0usize..=3,
    )
        .prop_map(|(n, ci, co, h, w, k, s, p)| {
            // Grow the padding until the window fits so every drawn case is a valid conv.
            let p = p.max(k.saturating_sub(h.min(w)).div_ceil(2));
            geometry(n, ci, co, h, w, k, s, p)
        })
        .prop_filter("valid geometry", |g| g.is_valid())
        .prop_flat_map(|g| (Just(g), any::<bool>(), any::<u64>()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn matches_reference((g, with_bias, seed) in arb_geometry()) {
        let case = Case::new(g, with_bias, seed);
        for level in SimdLevel::supported() {
            case.check_against_reference(level, all);
        }
        check_bias(&g, &case.dy);
    }
}

/// <conv(x), dy> = <x, backward_input(dy)> = <w, backward_weight(x, dy)>: both gradients are
/// adjoints of the (linear) forward map, so any indexing slip breaks the identity.
fn check_adjoint(case: &Case, level: SimdLevel) {
    let g = &case.g;
    let mut y = vec![0.0; g.output_len()];
    conv2d_forward(level, g, &case.x, &case.w, None, &mut y);
    let (_, dx, dw) = case.run(level);
    let dot = |a: &[f32], b: &[f32]| -> (f64, f64) {
        a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&p, &q)| (s + p as f64 * q as f64, m + (p as f64 * q as f64).abs()))
    };
    let (lhs, mag) = dot(&y, &case.dy);
    let (via_x, mag_x) = dot(&case.x, &dx);
    let (via_w, mag_w) = dot(&case.w, &dw);
    let scale = mag.max(mag_x).max(mag_w);
    assert!((lhs - via_x).abs() <= 1e-4 * scale, "{g:?} {level:?}: <y,dy> {lhs} vs <x,dx> {via_x}");
    assert!((lhs - via_w).abs() <= 1e-4 * scale, "{g:?} {level:?}: <y,dy> {lhs} vs <w,dw> {via_w}");
}

#[test]
fn adjoint_identities_hold() {
    let shapes = [
        geometry(2, 3, 5, 11, 9, 3, 1, 1),
        geometry(3, 4, 6, 13, 13, 7, 2, 3),
        geometry(1, 5, 7, 10, 12, 3, 2, 1),
        geometry(2, 6, 4, 9, 9, 1, 2, 0),
        geometry(2, 8, 8, 7, 7, 1, 1, 0),
        geometry(1, 2, 3, 6, 6, 5, 3, 2),
        // Kernels cropped to the taps that meet the input: ResNet18's layer4 on 28x28 inputs.
        geometry(3, 6, 5, 1, 1, 3, 1, 1),
        geometry(3, 6, 5, 2, 2, 3, 2, 1),
    ];
    for (i, g) in shapes.into_iter().enumerate() {
        let case = Case::new(g, false, 100 + i as u64);
        for level in SimdLevel::supported() {
            check_adjoint(&case, level);
        }
    }
}

/// sum(conv(x, w) * r) in f64.
fn loss(g: &Conv2dGeometry, x: &[f32], w: &[f32], r: &[f32]) -> f64 {
    let mut y = vec![0.0; g.output_len()];
    conv2d_forward(SimdLevel::best_supported(), g, x, w, None, &mut y);
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central difference of `loss` along element `i` of the buffer `which` selects (x or w).
fn numeric_grad(g: &Conv2dGeometry, x: &[f32], w: &[f32], r: &[f32], perturb_w: bool, i: usize) -> f64 {
    const EPS: f32 = 1e-2;
    let shifted = |delta: f32| {
        let (mut x, mut w) = (x.to_vec(), w.to_vec());
        let buf = if perturb_w { &mut w } else { &mut x };
        buf[i] += delta;
        loss(g, &x, &w, r)
    };
    (shifted(EPS) - shifted(-EPS)) / (2.0 * EPS as f64)
}

#[test]
fn gradients_match_finite_differences() {
    let shapes = [geometry(2, 3, 4, 7, 8, 3, 1, 1), geometry(1, 2, 3, 9, 9, 7, 2, 3), geometry(2, 3, 5, 6, 6, 1, 2, 0)];
    for (s, g) in shapes.into_iter().enumerate() {
        let case = Case::new(g, false, 7 + s as u64);
        let mut rng = Rng(99 + s as u64);
        for level in SimdLevel::supported() {
            let (_, dx, dw) = case.run(level);
            for _ in 0..12 {
                let i = rng.below(dx.len());
                let want = numeric_grad(&g, &case.x, &case.w, &case.dy, false, i);
                assert!((dx[i] as f64 - want).abs() <= 1e-2 * (1.0 + want.abs()), "dx[{i}] {g:?}: {} vs {want}", dx[i]);
                let j = rng.below(dw.len());
                let want = numeric_grad(&g, &case.x, &case.w, &case.dy, true, j);
                assert!((dw[j] as f64 - want).abs() <= 1e-2 * (1.0 + want.abs()), "dw[{j}] {g:?}: {} vs {want}", dw[j]);
            }
        }
    }
}

/// A picker of flat indices for [`Case::check_against_reference`]: the first and last (the
/// corners hit the padding) and `count` random ones, a new draw on each call.
fn corners_and_random(seed: u64, count: usize) -> impl Fn(usize) -> Vec<usize> {
    let calls = std::cell::Cell::new(seed);
    move |len| {
        let mut rng = Rng(calls.get());
        calls.set(calls.get() + 1);
        let mut v = vec![0, len - 1];
        v.extend((0..count).map(|_| rng.below(len)));
        v
    }
}

/// Every conv shape ResNet18 (and DenseNet121's 1x1/1) uses at 224x224, batch 1, spot-checked
/// at random outputs of each of the three kernels.
#[test]
fn resnet18_shapes_spot_check() {
    let shapes = [
        geometry(1, 3, 64, 224, 224, 7, 2, 3),
        geometry(1, 64, 64, 56, 56, 3, 1, 1),
        geometry(1, 64, 128, 56, 56, 3, 2, 1),
        geometry(1, 128, 128, 28, 28, 3, 1, 1),
        geometry(1, 64, 128, 56, 56, 1, 2, 0),
        geometry(1, 128, 256, 28, 28, 3, 2, 1),
        geometry(1, 256, 256, 14, 14, 3, 1, 1),
        geometry(1, 128, 256, 28, 28, 1, 2, 0),
        geometry(1, 256, 512, 14, 14, 3, 2, 1),
        geometry(1, 512, 512, 7, 7, 3, 1, 1),
        geometry(1, 256, 512, 14, 14, 1, 2, 0),
        geometry(2, 128, 32, 28, 28, 1, 1, 0),
        // Several images whose planes the weight gradient sums in pieces within each image.
        geometry(3, 32, 48, 40, 40, 3, 1, 1),
        // A pointwise weight gradient large enough to be split by pixels across tasks.
        geometry(3, 96, 40, 64, 64, 1, 1, 0),
        // Weight gradients split by unrolled rows (few output channels: DenseNet's growth
        // convolution) and by output channels (few pixels for many weights).
        geometry(2, 128, 32, 28, 28, 3, 1, 1),
        geometry(6, 512, 512, 7, 7, 3, 1, 1),
    ];
    for (s, g) in shapes.into_iter().enumerate() {
        let case = Case::new(g, true, 1000 + s as u64);
        case.check_against_reference(SimdLevel::best_supported(), corners_and_random(5000 + s as u64, 24));
    }
}

/// Thread count and scheduling must not change results (tasks own disjoint outputs and sum in
/// a fixed order).
#[test]
fn results_are_deterministic() {
    let case = Case::new(geometry(3, 16, 24, 15, 15, 3, 1, 1), true, 3);
    let first = case.run(SimdLevel::best_supported());
    for _ in 0..3 {
        assert!(case.run(SimdLevel::best_supported()) == first);
    }
}

/// Late-network shapes of DenseNet121 and ResNet50 at small inputs: many channels over a tiny
/// plane, batch 2, 1x1 stride-1 (the pointwise path) and 3x3. Every output is checked.
#[test]
fn small_plane_wide_channel_shapes() {
    let shapes = [
        geometry(2, 1024, 512, 4, 4, 1, 1, 0),
        geometry(2, 544, 128, 2, 2, 1, 1, 0),
        geometry(2, 128, 32, 2, 2, 3, 1, 1),
        geometry(2, 2048, 512, 2, 2, 1, 1, 0),
        geometry(3, 96, 200, 3, 3, 1, 1, 0),
    ];
    for (s, g) in shapes.into_iter().enumerate() {
        let case = Case::new(g, false, 7000 + s as u64);
        case.check_against_reference(SimdLevel::best_supported(), all);
    }
}

/// The fused inference convolution (bias, eval-mode batch norm, residual add and ReLU in the
/// GEMM's store, weights packed once) computes exactly what the separate ops do, in the same order, for the batch-1
/// path (epilogue inside the GEMM), the small-batch path and the blocked path (epilogue in the
/// copy-out), with packed weights cut between tasks.
#[test]
fn fused_conv_equals_the_separate_ops_bit_for_bit() {
    use cxr::{ops, Device, Tensor};
    let cases = [(1, 16, 20, 3, 9, 1), (3, 8, 30, 3, 7, 2), (2, 32, 70, 1, 40, 1), (1, 64, 64, 3, 56, 1)];
    for (i, &(batch, cin, cout, k, size, stride)) in cases.iter().enumerate() {
        let seed = 10 * i as u64;
        let x = Tensor::rand_uniform([batch, cin, size, size], -1.0, 1.0, seed, Device::Cpu).unwrap();
        let w = Tensor::rand_uniform([cout, cin, k, k], -0.3, 0.3, seed + 1, Device::Cpu).unwrap();
        let b = Tensor::rand_uniform([cout], -0.5, 0.5, seed + 2, Device::Cpu).unwrap();
        let pad = k / 2;
        let out = (size + 2 * pad - k) / stride + 1;
        let r = Tensor::rand_uniform([batch, cout, out, out], -1.0, 1.0, seed + 3, Device::Cpu).unwrap();
        let state = ops::BatchNormState {
            running_mean: Tensor::rand_uniform([cout], -0.5, 0.5, seed + 4, Device::Cpu).unwrap(),
            running_var: Tensor::rand_uniform([cout], 0.5, 2.0, seed + 5, Device::Cpu).unwrap(),
            momentum: 0.1,
            eps: 1e-5,
        };
        let gamma = Tensor::rand_uniform([cout], 0.5, 1.5, seed + 6, Device::Cpu).unwrap();
        let beta = Tensor::rand_uniform([cout], -0.5, 0.5, seed + 7, Device::Cpu).unwrap();
        let _no_grad = cxr::no_grad();
        let conv = ops::conv2d(&x, &w, Some(&b), stride, pad).unwrap();
        let normed = ops::batch_norm(&conv, &gamma, &beta, &state, false).unwrap();
        let separate = ops::relu(&ops::add(&normed, &r).unwrap()).unwrap();
        let norm = ops::NormParams { gamma: &gamma, beta: &beta, state: &state };
        let tail = ops::ConvTail { norm: Some(norm), residual: Some(&r), relu: true };
        let fused = ops::conv2d_fused(&x, &w, Some(&b), stride, pad, tail).unwrap();
        assert_eq!(fused.dims(), separate.dims());
        assert_eq!(fused.to_vec().unwrap(), separate.to_vec().unwrap(), "case {i}");
        // Twice: the second call reads the cached packed weights.
        let again = ops::conv2d_fused(&x, &w, Some(&b), stride, pad, tail).unwrap();
        assert_eq!(again.to_vec().unwrap(), separate.to_vec().unwrap(), "case {i}, cached weights");
    }
}

/// Weights are packed once and the packed form cached beside them; an in-place update (an
/// optimizer step), also through a view that shares the storage, must be seen by the next call.
#[test]
fn cached_packed_weights_follow_in_place_updates() {
    use cxr::backend::Storage;
    use cxr::{ops, Device, Tensor};
    let x = Tensor::rand_uniform([1, 3, 12, 12], -1.0, 1.0, 1, Device::Cpu).unwrap();
    let w = Tensor::rand_uniform([20, 3, 3, 3], -1.0, 1.0, 2, Device::Cpu).unwrap();
    let before = ops::conv2d(&x, &w, None, 1, 1).unwrap().to_vec().unwrap();
    let doubled: Vec<f32> = w.to_vec().unwrap().iter().map(|v| v * 2.0).collect();
    *w.storage_mut() = Storage::Cpu(doubled);
    let after = ops::conv2d(&x, &w, None, 1, 1).unwrap().to_vec().unwrap();
    // Doubling is exact in floating point, so every output doubles exactly.
    assert!(before.iter().zip(&after).all(|(b, a)| *a == 2.0 * b), "stale packed weights were used");
    // A write through another handle on the same storage (detach shares it) invalidates too.
    let view = w.detach();
    *view.storage_mut() = Storage::Cpu(vec![0.0; 20 * 27]);
    let zeroed = ops::conv2d(&x, &w, None, 1, 1).unwrap().to_vec().unwrap();
    assert!(zeroed.iter().all(|&v| v == 0.0), "a write through a view was missed");
}

/// Batches large enough that the weights are packed once per call and shared by every task:
/// backward-input with several image groups (small planes, so a group holds several images,
/// with channel counts whose bands must start on a packed panel) and forward with several pixel
/// blocks. Outputs at 400 random places (and the two corners) are compared with the reference,
/// at every SIMD level.
#[test]
fn weights_shared_across_tasks_match_reference() {
    let shapes = [
        geometry(40, 29, 17, 5, 5, 3, 1, 1), // 25-pixel planes: groups of 11 images, 4 groups
        geometry(24, 33, 9, 7, 7, 1, 1, 0),  // pointwise, 49-pixel planes, 3 groups
        geometry(20, 13, 30, 8, 8, 3, 2, 1), // stride 2: 16-pixel planes, 2 groups
        geometry(3, 70, 40, 24, 24, 3, 1, 1), // forward in several pixel blocks
    ];
    for (i, g) in shapes.into_iter().enumerate() {
        let case = Case::new(g, false, 300 + i as u64);
        let pick = corners_and_random(7000 + i as u64, 400);
        for level in SimdLevel::supported() {
            case.check_against_reference(level, &pick);
        }
    }
}

/// The direct kernel's small planes (64 channels and more): on 4x4 planes of 64 and 72
/// channels an image is a multiple of 4 KiB or nearly so, and the direct path reads a copy of
/// the input (and, for the input gradient, of the output gradient) with a padded image stride;
/// on 7x7 it reads the input in place. Every output is compared with the reference at every
/// SIMD level.
#[test]
fn direct_small_planes_with_and_without_a_staged_input_match_reference() {
    let shapes = [
        geometry(16, 64, 64, 4, 4, 3, 1, 1),
        geometry(13, 64, 72, 4, 4, 3, 1, 1),
        geometry(8, 64, 64, 7, 7, 3, 1, 1),
        geometry(16, 64, 64, 8, 8, 3, 2, 1),
    ];
    check_every_output(&shapes, 950);
}

/// Small planes at training batches (ResNet18's late layers at 224x224, and every layer of the
/// 28x28 MedMNIST-stem network, are 14x14, 7x7 and 4x4 planes at batch 32 to 128), where most
/// output pixels sit on the border and blocks of pixels span many images: stride 1 and 2, a 5x5
/// kernel with two border runs per side, an output channel count that leaves a partial panel,
/// with bias. Every output is compared with the reference at every SIMD level.
#[test]
fn small_planes_at_training_batches_match_reference() {
    let shapes = [
        geometry(32, 16, 20, 7, 7, 3, 1, 1),
        geometry(16, 24, 17, 4, 4, 3, 1, 1),
        geometry(8, 40, 33, 14, 14, 3, 1, 1),
        geometry(32, 16, 18, 14, 14, 3, 2, 1),
        geometry(12, 32, 8, 9, 9, 5, 1, 2),
    ];
    check_every_output(&shapes, 900);
}

/// Every output of each shape (with bias; seeds from `seed` up) against the reference at
/// every SIMD level.
fn check_every_output(shapes: &[Conv2dGeometry], seed: u64) {
    for (i, &g) in shapes.iter().enumerate() {
        let case = Case::new(g, true, seed + i as u64);
        for level in SimdLevel::supported() {
            case.check_against_reference(level, all);
        }
    }
}
