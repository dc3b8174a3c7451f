//! Property tests: every op's CPU forward (and, where the reference backward is simple, its
//! backward through autograd) against the naive f64 references in `common`.
//!
//! Tolerances (|got - want| <= atol + rtol * |want|) are stated per test. Case counts are kept
//! modest (PROPTEST_CASES-style config below) so the suite stays fast on a shared 2-core machine.

mod common;

use common::*;
use cxr::ops::{self, BatchNormState};
use cxr::{Error, Tensor};
use proptest::prelude::*;

const CASES: u32 = 48;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// Rank 1..=4 shapes with odd sizes and ones.
fn any_shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=7, 1..=4)
}

fn numel(d: &[usize]) -> usize {
    d.iter().product()
}

/// Runs backward from `y` with seed `dy` and returns the gradient of `x`.
fn backward_grad(y: &Tensor, dy: &[f32], x: &Tensor) -> Vec<f32> {
    let seed = Tensor::from_vec(dy.to_vec(), y.shape().clone()).unwrap();
    y.backward_with(&seed).unwrap();
    grad_of(x)
}

fn bn_state(mean: Vec<f32>, var: Vec<f32>) -> BatchNormState {
    let c = mean.len();
    BatchNormState { running_mean: tensor(mean, &[c]), running_var: tensor(var, &[c]), momentum: 0.1, eps: 1e-5 }
}

/// Pool geometries (kernel, stride, padding), including ResNet's stem pool 3x3/2 pad 1.
const POOLS: [(usize, usize, usize); 8] =
    [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 0), (2, 1, 1), (3, 2, 0), (1, 1, 0), (4, 3, 2)];

proptest! {
    #![proptest_config(config())]

    /// ReLU forward and backward are exact (tolerance 0).
    #[test]
    fn relu_matches_reference(dims in any_shape(), seed in any::<u64>(), ties in any::<bool>()) {
        let n = numel(&dims);
        // With `ties`, a third of the inputs are exactly 0 (the kink: PyTorch's gradient there is 0).
        let data = if ties { rand_ties(n, seed, 1, 1.0) } else { rand_vec(n, seed, -3.0, 3.0) };
        let x = leaf(data.clone(), &dims);
        let y = ops::relu(&x).unwrap();
        prop_assert_eq!(y.dims(), &dims[..]);
        assert_close("relu forward", &host(&y), &relu_ref(&data), 0.0, 0.0);
        let dy = rand_vec(n, seed ^ 1, -1.0, 1.0);
        assert_close("relu backward", &backward_grad(&y, &dy, &x), &relu_backward_ref(&data, &dy), 0.0, 0.0);
    }

    /// Sigmoid: forward rtol 2e-6 (atol 1e-12 for results that underflow towards 0);
    /// backward atol 1e-7 + rtol 1e-5 (y(1-y) is formed from the rounded f32 output, as PyTorch does).
    #[test]
    fn sigmoid_matches_reference(dims in any_shape(), seed in any::<u64>()) {
        let n = numel(&dims);
        let mut data = rand_vec(n, seed, -20.0, 20.0);
        let extremes = [-100.0f32, 100.0, -88.5, 88.5, -30.0, 30.0, 0.0, -1e-8];
        for (i, e) in extremes.iter().enumerate().take(n) {
            data[(i * 7) % n] = *e;
        }
        let x = leaf(data.clone(), &dims);
        let y = ops::sigmoid(&x).unwrap();
        let yv = host(&y);
        prop_assert!(yv.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
        assert_close("sigmoid forward", &yv, &sigmoid_ref(&data), 2e-6, 1e-12);
        let dy = rand_vec(n, seed ^ 1, -1.0, 1.0);
        let g = backward_grad(&y, &dy, &x);
        prop_assert!(g.iter().all(|v| v.is_finite()));
        assert_close("sigmoid backward", &g, &sigmoid_backward_ref(&data, &dy), 1e-5, 1e-7);
    }

    /// add, mul and scale: one correctly rounded f32 op per element (rtol 1.2e-7 ~ 2^-23);
    /// gradients dy, dy*b, dy*a, dy*s likewise.
    #[test]
    fn add_mul_scale_match_reference(dims in any_shape(), seed in any::<u64>(), s in -3.0f32..3.0) {
        let n = numel(&dims);
        let (av, bv) = (rand_vec(n, seed, -5.0, 5.0), rand_vec(n, seed ^ 7, -5.0, 5.0));
        let dy = rand_vec(n, seed ^ 9, -1.0, 1.0);
        let tol = 1.2e-7;

        let (a, b) = (leaf(av.clone(), &dims), leaf(bv.clone(), &dims));
        let y = ops::add(&a, &b).unwrap();
        assert_close("add forward", &host(&y), &add_ref(&av, &bv), tol, 1e-30);
        backward_grad(&y, &dy, &a);
        assert_close32("add grad a", &grad_of(&a), &dy, 0.0, 0.0);
        assert_close32("add grad b", &grad_of(&b), &dy, 0.0, 0.0);

        let (a, b) = (leaf(av.clone(), &dims), leaf(bv.clone(), &dims));
        let y = ops::mul(&a, &b).unwrap();
        assert_close("mul forward", &host(&y), &mul_ref(&av, &bv), tol, 1e-30);
        backward_grad(&y, &dy, &a);
        assert_close("mul grad a", &grad_of(&a), &mul_ref(&dy, &bv), tol, 1e-30);
        assert_close("mul grad b", &grad_of(&b), &mul_ref(&dy, &av), tol, 1e-30);

        let a = leaf(av.clone(), &dims);
        let y = ops::scale(&a, s).unwrap();
        let sv = vec![s; n];
        assert_close("scale forward", &host(&y), &mul_ref(&av, &sv), tol, 1e-30);
        backward_grad(&y, &dy, &a);
        assert_close("scale grad", &grad_of(&a), &mul_ref(&dy, &sv), tol, 1e-30);
    }

    /// matmul forward and both gradients: values in [-1, 1), k <= 19, atol 1e-5 + rtol 1e-5.
    #[test]
    fn matmul_matches_reference(m in 1usize..=13, k in 1usize..=19, n in 1usize..=13, seed in any::<u64>()) {
        let (av, bv) = (rand_vec(m * k, seed, -1.0, 1.0), rand_vec(k * n, seed ^ 3, -1.0, 1.0));
        let (a, b) = (leaf(av.clone(), &[m, k]), leaf(bv.clone(), &[k, n]));
        let y = ops::matmul(&a, &b).unwrap();
        prop_assert_eq!(y.dims(), &[m, n]);
        assert_close("matmul forward", &host(&y), &matmul_ref(&av, &bv, m, k, n), 1e-5, 1e-5);
        let dy = rand_vec(m * n, seed ^ 5, -1.0, 1.0);
        backward_grad(&y, &dy, &a);
        // dA = dY B^T, dB = A^T dY
        let da = matmul_ref(&dy, &transpose_ref(&bv, k, n), m, n, k);
        let db = matmul_ref(&transpose_ref(&av, m, k), &dy, k, m, n);
        assert_close("matmul grad a", &grad_of(&a), &da, 1e-5, 1e-5);
        assert_close("matmul grad b", &grad_of(&b), &db, 1e-5, 1e-5);
    }

    /// linear (with and without bias): forward and dx, dW, db; atol 1e-5 + rtol 1e-5.
    #[test]
    fn linear_matches_reference(
        rows in 1usize..=9, inf in 1usize..=17, outf in 1usize..=9, with_bias in any::<bool>(), seed in any::<u64>()
    ) {
        let xv = rand_vec(rows * inf, seed, -1.0, 1.0);
        let wv = rand_vec(outf * inf, seed ^ 1, -1.0, 1.0);
        let bv = rand_vec(outf, seed ^ 2, -1.0, 1.0);
        let (x, w, b) = (leaf(xv.clone(), &[rows, inf]), leaf(wv.clone(), &[outf, inf]), leaf(bv.clone(), &[outf]));
        let y = ops::linear(&x, &w, with_bias.then_some(&b)).unwrap();
        prop_assert_eq!(y.dims(), &[rows, outf]);
        let want = linear_ref(&xv, &wv, with_bias.then_some(&bv[..]), rows, inf, outf);
        assert_close("linear forward", &host(&y), &want, 1e-5, 1e-5);
        let dy = rand_vec(rows * outf, seed ^ 3, -1.0, 1.0);
        backward_grad(&y, &dy, &x);
        let (dx, dw, db) = linear_backward_ref(&xv, &wv, &dy, rows, inf, outf);
        assert_close("linear dx", &grad_of(&x), &dx, 1e-5, 1e-5);
        assert_close("linear dw", &grad_of(&w), &dw, 1e-5, 1e-5);
        if with_bias {
            assert_close("linear db", &grad_of(&b), &db, 1e-5, 1e-5);
        } else {
            prop_assert!(b.grad().is_none());
        }
    }

    /// conv2d forward (the reference the faster conv kernels must keep matching): atol 1e-5 + rtol 1e-5.
    #[test]
    fn conv2d_matches_reference(
        n in 1usize..=2, c in 1usize..=3, o in 1usize..=4, h in 1usize..=8, w in 1usize..=8,
        k in prop::sample::select(vec![1usize, 2, 3]), stride in 1usize..=2, pad in 0usize..=1,
        with_bias in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let s = Nchw { n, c, h, w };
        let xv = rand_vec(s.len(), seed, -1.0, 1.0);
        let wv = rand_vec(o * c * k * k, seed ^ 1, -1.0, 1.0);
        let bv = rand_vec(o, seed ^ 2, -1.0, 1.0);
        let x = tensor(xv.clone(), &s.dims());
        let wt = tensor(wv.clone(), &[o, c, k, k]);
        let bt = tensor(bv.clone(), &[o]);
        let y = ops::conv2d(&x, &wt, with_bias.then_some(&bt), stride, pad).unwrap();
        let (want, os) = conv2d_ref(&xv, s, &wv, o, k, k, with_bias.then_some(&bv[..]), stride, pad);
        prop_assert_eq!(y.dims(), &os.dims()[..]);
        assert_close("conv2d forward", &host(&y), &want, 1e-5, 1e-5);
    }

    /// BatchNorm1d ([N, C]) and 2d ([N, C, H, W]) in training mode: output (atol 1e-4 + rtol 1e-4),
    /// the running-statistics update with momentum 0.1 and the UNBIASED variance (atol 1e-6 +
    /// rtol 1e-5), and dx, dgamma, dbeta against the closed form (atol 1e-4 + rtol 1e-3).
    #[test]
    fn batch_norm_train_matches_reference(
        n in 1usize..=5, c in 1usize..=4, hw in prop::option::of((1usize..=5, 1usize..=5)), seed in any::<u64>()
    ) {
        let plane = hw.map_or(1, |(h, w)| h * w);
        prop_assume!(n * plane >= 2);
        let dims: Vec<usize> = match hw { Some((h, w)) => vec![n, c, h, w], None => vec![n, c] };
        let xv = rand_vec(n * c * plane, seed, -2.0, 3.0);
        let gv = rand_vec(c, seed ^ 1, 0.5, 1.5);
        let bv = rand_vec(c, seed ^ 2, -0.5, 0.5);
        let rm0 = rand_vec(c, seed ^ 3, -1.0, 1.0);
        let rv0 = rand_vec(c, seed ^ 4, 0.5, 2.0);
        let state = bn_state(rm0.clone(), rv0.clone());
        let (x, g, b) = (leaf(xv.clone(), &dims), leaf(gv.clone(), &[c]), leaf(bv.clone(), &[c]));
        let y = ops::batch_norm(&x, &g, &b, &state, true).unwrap();
        let (want, rm, rv) = batch_norm_train_ref(&xv, n, c, plane, &gv, &bv, &rm0, &rv0, 0.1, 1e-5);
        assert_close("batch_norm train forward", &host(&y), &want, 1e-4, 1e-4);
        assert_close("running_mean", &host(&state.running_mean), &rm, 1e-5, 1e-6);
        assert_close("running_var (unbiased)", &host(&state.running_var), &rv, 1e-5, 1e-6);

        let dy = rand_vec(xv.len(), seed ^ 5, -1.0, 1.0);
        backward_grad(&y, &dy, &x);
        let (dx, dg, db) = batch_norm_train_backward_ref(&xv, &dy, n, c, plane, &gv, 1e-5);
        assert_close("batch_norm dx", &grad_of(&x), &dx, 1e-3, 1e-4);
        assert_close("batch_norm dgamma", &grad_of(&g), &dg, 1e-3, 1e-4);
        assert_close("batch_norm dbeta", &grad_of(&b), &db, 1e-3, 1e-4);
    }

    /// Batch norm in eval mode: normalises with the running statistics (atol 1e-5 + rtol 1e-5),
    /// leaves them untouched, and its backward is the affine map's (atol 1e-5 + rtol 1e-4).
    #[test]
    fn batch_norm_eval_matches_reference(
        n in 1usize..=4, c in 1usize..=4, hw in prop::option::of((1usize..=4, 1usize..=4)), seed in any::<u64>()
    ) {
        let plane = hw.map_or(1, |(h, w)| h * w);
        let dims: Vec<usize> = match hw { Some((h, w)) => vec![n, c, h, w], None => vec![n, c] };
        let xv = rand_vec(n * c * plane, seed, -2.0, 2.0);
        let gv = rand_vec(c, seed ^ 1, 0.5, 1.5);
        let bv = rand_vec(c, seed ^ 2, -0.5, 0.5);
        let rm = rand_vec(c, seed ^ 3, -1.0, 1.0);
        let rv = rand_vec(c, seed ^ 4, 0.01, 2.0);
        let state = bn_state(rm.clone(), rv.clone());
        let (x, g, b) = (leaf(xv.clone(), &dims), leaf(gv.clone(), &[c]), leaf(bv.clone(), &[c]));
        let y = ops::batch_norm(&x, &g, &b, &state, false).unwrap();
        assert_close("batch_norm eval forward", &host(&y), &batch_norm_eval_ref(&xv, n, c, plane, &gv, &bv, &rm, &rv, 1e-5), 1e-5, 1e-5);
        prop_assert_eq!(host(&state.running_mean), rm.clone());
        prop_assert_eq!(host(&state.running_var), rv.clone());

        let dy = rand_vec(xv.len(), seed ^ 5, -1.0, 1.0);
        backward_grad(&y, &dy, &x);
        let (mut dx, mut dg, mut db) = (vec![0.0; xv.len()], vec![0.0; c], vec![0.0; c]);
        for i in 0..xv.len() {
            let ch = (i / plane) % c;
            let inv = 1.0 / (rv[ch] as f64 + 1e-5).sqrt();
            dx[i] = dy[i] as f64 * gv[ch] as f64 * inv;
            dg[ch] += dy[i] as f64 * (xv[i] as f64 - rm[ch] as f64) * inv;
            db[ch] += dy[i] as f64;
        }
        assert_close("batch_norm eval dx", &grad_of(&x), &dx, 1e-4, 1e-5);
        assert_close("batch_norm eval dgamma", &grad_of(&g), &dg, 1e-4, 1e-5);
        assert_close("batch_norm eval dbeta", &grad_of(&b), &db, 1e-4, 1e-5);
    }

    /// Max pool over mixed geometries: forward exact; backward routes each output gradient to the
    /// window's FIRST maximum (row-major), atol 1e-6 + rtol 1e-6 where windows overlap. Data are
    /// either tie-heavy (values in {-1, -0.5, 0, 0.5, 1}) or all negative (padding must act as
    /// -inf, never as 0).
    #[test]
    fn max_pool2d_matches_reference(
        n in 1usize..=2, c in 1usize..=3, h in 1usize..=9, w in 1usize..=9,
        geom in prop::sample::select(POOLS.to_vec()), mode in 0u8..3, seed in any::<u64>()
    ) {
        let (k, stride, pad) = geom;
        let (h, w) = (h.max(k - 2 * pad), w.max(k - 2 * pad));
        let s = Nchw { n, c, h, w };
        let xv = match mode {
            0 => rand_ties(s.len(), seed, 2, 0.5),
            1 => rand_vec(s.len(), seed, -3.0, -1.0),
            _ => rand_vec(s.len(), seed, -1.0, 1.0),
        };
        let x = leaf(xv.clone(), &s.dims());
        let y = ops::max_pool2d(&x, k, stride, pad).unwrap();
        let (want, arg, os) = max_pool2d_ref(&xv, s, k, stride, pad);
        prop_assert_eq!(y.dims(), &os.dims()[..]);
        assert_close("max_pool2d forward", &host(&y), &want, 0.0, 0.0);
        let dy = rand_vec(os.len(), seed ^ 1, -1.0, 1.0);
        let g = backward_grad(&y, &dy, &x);
        assert_close("max_pool2d backward", &g, &max_pool2d_backward_ref(&arg, &dy, s.len()), 1e-6, 1e-6);
    }

    /// Average pool (count_include_pad=True): 2x2/2 and the other geometries; forward and backward
    /// atol 1e-6 + rtol 1e-5.
    #[test]
    fn avg_pool2d_matches_reference(
        n in 1usize..=2, c in 1usize..=3, h in 1usize..=9, w in 1usize..=9,
        geom in prop::sample::select(vec![(2usize, 2usize, 0usize), (2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 1), (3, 3, 0)]),
        seed in any::<u64>()
    ) {
        let (k, stride, pad) = geom;
        let (h, w) = (h.max(k - 2 * pad), w.max(k - 2 * pad));
        let s = Nchw { n, c, h, w };
        let xv = rand_vec(s.len(), seed, -2.0, 2.0);
        let x = leaf(xv.clone(), &s.dims());
        let y = ops::avg_pool2d(&x, k, stride, pad).unwrap();
        let (want, os) = avg_pool2d_ref(&xv, s, k, stride, pad);
        prop_assert_eq!(y.dims(), &os.dims()[..]);
        assert_close("avg_pool2d forward", &host(&y), &want, 1e-5, 1e-6);
        let dy = rand_vec(os.len(), seed ^ 1, -1.0, 1.0);
        let g = backward_grad(&y, &dy, &x);
        assert_close("avg_pool2d backward", &g, &avg_pool2d_backward_ref(&dy, s, k, stride, pad), 1e-5, 1e-6);
    }

    /// Global average pool [N, C, H, W] -> [N, C]: forward atol 1e-6 + rtol 1e-5; backward spreads
    /// dy / (H W) (atol 1e-7 + rtol 1e-6).
    #[test]
    fn global_avg_pool_matches_reference(
        n in 1usize..=3, c in 1usize..=5, h in 1usize..=9, w in 1usize..=9, seed in any::<u64>()
    ) {
        let s = Nchw { n, c, h, w };
        let xv = rand_vec(s.len(), seed, -2.0, 2.0);
        let x = leaf(xv.clone(), &s.dims());
        let y = ops::global_avg_pool(&x).unwrap();
        prop_assert_eq!(y.dims(), &[n, c]);
        assert_close("global_avg_pool forward", &host(&y), &global_avg_pool_ref(&xv, s), 1e-5, 1e-6);
        let dy = rand_vec(n * c, seed ^ 1, -1.0, 1.0);
        let g = backward_grad(&y, &dy, &x);
        let want: Vec<f64> = (0..s.len()).map(|i| dy[i / (h * w)] as f64 / (h * w) as f64).collect();
        assert_close("global_avg_pool backward", &g, &want, 1e-6, 1e-7);
    }

    /// cat_channels of 3-5 parts ([N, C_i, H, W] or [N, C_i]): forward exact, each part's gradient
    /// exactly its channel block of dy; a part that does not require grad gets none.
    #[test]
    fn cat_channels_matches_reference(
        n in 1usize..=3, chans in prop::collection::vec(1usize..=4, 3..=5),
        hw in prop::option::of((1usize..=4, 1usize..=4)), frozen in 0usize..5, seed in any::<u64>()
    ) {
        let plane = hw.map_or(1, |(h, w)| h * w);
        let dims_of = |c: usize| match hw { Some((h, w)) => vec![n, c, h, w], None => vec![n, c] };
        let datas: Vec<Vec<f32>> =
            chans.iter().enumerate().map(|(i, &c)| rand_vec(n * c * plane, seed ^ i as u64, -1.0, 1.0)).collect();
        let parts: Vec<Tensor> = datas
            .iter()
            .zip(&chans)
            .enumerate()
            .map(|(i, (d, &c))| if i == frozen { tensor(d.clone(), &dims_of(c)) } else { leaf(d.clone(), &dims_of(c)) })
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let y = ops::cat_channels(&refs).unwrap();
        let total: usize = chans.iter().sum();
        prop_assert_eq!(y.dims(), &dims_of(total)[..]);
        let pairs: Vec<(&[f32], usize)> = datas.iter().zip(&chans).map(|(d, &c)| (&d[..], c)).collect();
        assert_close32("cat_channels forward", &host(&y), &cat_channels_ref(&pairs, n, plane), 0.0, 0.0);

        let dy = rand_vec(n * total * plane, seed ^ 99, -1.0, 1.0);
        let seed_t = Tensor::from_vec(dy.clone(), y.shape().clone()).unwrap();
        y.backward_with(&seed_t).unwrap();
        let mut offset = 0;
        for (i, (p, &c)) in parts.iter().zip(&chans).enumerate() {
            let mut want = Vec::new();
            for b in 0..n {
                let start = (b * total + offset) * plane;
                want.extend_from_slice(&dy[start..start + c * plane]);
            }
            if i == frozen {
                prop_assert!(p.grad().is_none());
            } else {
                assert_close32("cat_channels grad", &grad_of(p), &want, 0.0, 0.0);
            }
            offset += c;
        }
    }

    /// BCE with logits (mean), with and without pos_weight, hard or soft targets, some logits
    /// +-100. The loss and gradient are finite; loss within rtol 1e-6 of the f64 reference plus
    /// atol 2e-7 * mean(|x| (1 + pos_weight)) (the stable form's last-bit rounding on large
    /// logits, as in PyTorch); gradient atol 1e-7 / len + rtol 1e-5.
    #[test]
    fn bce_with_logits_matches_reference(
        rows in 1usize..=6, classes in 1usize..=8, weighted in any::<bool>(), soft in any::<bool>(), seed in any::<u64>()
    ) {
        let len = rows * classes;
        let mut xv = rand_vec(len, seed, -10.0, 10.0);
        let pick = rand_vec(len, seed ^ 1, 0.0, 1.0);
        for (x, p) in xv.iter_mut().zip(&pick) {
            if *p < 0.15 { *x = 100.0 } else if *p < 0.3 { *x = -100.0 }
        }
        let tv = if soft { rand_vec(len, seed ^ 2, 0.0, 1.0) } else { rand_ties(len, seed ^ 2, 1, 1.0).iter().map(|v| v.abs()).collect() };
        let pwv = rand_vec(classes, seed ^ 3, 0.5, 5.0);
        let pw_ref = weighted.then_some(&pwv[..]);
        let x = leaf(xv.clone(), &[rows, classes]);
        let t = tensor(tv.clone(), &[rows, classes]);
        let pw = tensor(pwv.clone(), &[classes]);
        let loss = ops::bce_with_logits(&x, &t, weighted.then_some(&pw)).unwrap();
        prop_assert_eq!(loss.dims(), &[] as &[usize]);
        let got = loss.to_scalar().unwrap();
        prop_assert!(got.is_finite());
        let want = bce_ref(&xv, &tv, pw_ref, classes);
        let scale: f64 = xv.iter().enumerate().map(|(i, &x)| (x as f64).abs() * (1.0 + pw_ref.map_or(1.0, |p| p[i % classes] as f64))).sum::<f64>() / len as f64;
        assert_close("bce loss", &[got], &[want], 1e-6, 2e-7 * scale);

        loss.backward().unwrap();
        let g = grad_of(&x);
        prop_assert!(g.iter().all(|v| v.is_finite()));
        assert_close("bce grad", &g, &bce_backward_ref(&xv, &tv, pw_ref, classes), 1e-5, 1e-7 / len as f64);
    }

    /// Dropout in training mode at moderate size: output equals the Philox-mask reference exactly,
    /// kept values are x / (1 - p) (rtol 1e-6), the same seed gives the same mask, the gradient is
    /// dy times the mask (rtol 1e-6); eval mode is the identity.
    #[test]
    fn dropout_matches_reference(dims in any_shape(), p in 0.05f32..0.95, seed in any::<u64>()) {
        let n = numel(&dims);
        let xv = away_from_zero(n, seed);
        let x = leaf(xv.clone(), &dims);
        let y = ops::dropout(&x, p, true, seed).unwrap();
        let yv = host(&y);
        assert_close("dropout vs Philox reference", &yv, &dropout_ref(&xv, p, seed), 0.0, 0.0);
        let y2 = host(&ops::dropout(&x, p, true, seed).unwrap());
        prop_assert_eq!(&yv, &y2);
        let keep = 1.0 / (1.0 - p as f64);
        for (&xi, &yi) in xv.iter().zip(&yv) {
            if yi != 0.0 {
                assert_close("dropout kept value", &[yi], &[xi as f64 * keep], 1e-6, 0.0);
            }
        }
        let dy = rand_vec(n, seed ^ 1, -1.0, 1.0);
        let g = backward_grad(&y, &dy, &x);
        let want: Vec<f64> = yv.iter().zip(&dy).map(|(&yi, &d)| if yi == 0.0 { 0.0 } else { d as f64 * keep }).collect();
        assert_close("dropout grad", &g, &want, 1e-6, 0.0);

        let e = ops::dropout(&x, p, false, seed).unwrap();
        prop_assert_eq!(host(&e), xv);
    }

    /// reshape / flatten keep the elements in order (exact) and reshape the gradient back.
    #[test]
    fn reshape_flatten_match_reference(dims in any_shape(), seed in any::<u64>()) {
        let n = numel(&dims);
        let xv = rand_vec(n, seed, -1.0, 1.0);
        let x = leaf(xv.clone(), &dims);
        let flat = x.flatten().unwrap();
        prop_assert_eq!(flat.dims(), &[dims[0], n / dims[0]]);
        prop_assert_eq!(host(&flat), xv.clone());
        let r = flat.reshape([n]).unwrap();
        prop_assert_eq!(host(&r), xv.clone());
        // y = r * r keeps the view in the graph: dx = 2 x dy reshaped to x's dims.
        let y = ops::mul(&r, &r).unwrap();
        let dy = rand_vec(n, seed ^ 1, -1.0, 1.0);
        let g = x.grad();
        prop_assert!(g.is_none());
        let seed_t = tensor(dy.clone(), &[n]);
        y.backward_with(&seed_t).unwrap();
        let gx = x.grad().unwrap();
        prop_assert_eq!(gx.dims(), &dims[..]);
        let want: Vec<f64> = xv.iter().zip(&dy).map(|(&x, &d)| 2.0 * x as f64 * d as f64).collect();
        assert_close("reshape grad", &host(&gx), &want, 1.2e-7, 1e-30);
    }
}

/// Elementwise kernels split large tensors across threads: check that path too (> 32768 elements).
/// Tolerances as in the proptest versions.
#[test]
fn elementwise_large_tensors_match_reference() {
    let n = 70_001;
    let (av, bv) = (rand_vec(n, 11, -5.0, 5.0), rand_vec(n, 12, -5.0, 5.0));
    let (a, b) = (tensor(av.clone(), &[n]), tensor(bv.clone(), &[n]));
    assert_close("add large", &host(&ops::add(&a, &b).unwrap()), &add_ref(&av, &bv), 1.2e-7, 1e-30);
    assert_close("mul large", &host(&ops::mul(&a, &b).unwrap()), &mul_ref(&av, &bv), 1.2e-7, 1e-30);
    assert_close("relu large", &host(&ops::relu(&a).unwrap()), &relu_ref(&av), 0.0, 0.0);
    assert_close("sigmoid large", &host(&ops::sigmoid(&a).unwrap()), &sigmoid_ref(&av), 2e-6, 1e-12);
}

/// ReLU propagates NaN (PyTorch >= 0.4.1: a NaN must not be silently turned into 0, which would
/// hide a diverging network) and passes the gradient through it; +-inf map to inf / 0. Exact.
#[test]
fn relu_propagates_nan() {
    let xv = vec![f32::NAN, -1.0, 0.0, -0.0, 2.0, f32::INFINITY, f32::NEG_INFINITY];
    let x = leaf(xv.clone(), &[7]);
    let y = ops::relu(&x).unwrap();
    let yv = host(&y);
    assert!(yv[0].is_nan(), "relu(NaN) must be NaN, got {}", yv[0]);
    assert_close("relu special values", &yv, &relu_ref(&xv), 0.0, 0.0);
    let g = backward_grad(&y, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], &x);
    assert_eq!(g, vec![1.0, 0.0, 0.0, 0.0, 5.0, 6.0, 0.0]);
}

/// Sigmoid saturates without overflow: exactly 1 at +100 and a tiny non-negative value at -100.
#[test]
fn sigmoid_saturates_at_large_logits() {
    let x = tensor(vec![-1000.0, -100.0, 100.0, 1000.0, f32::MAX, f32::MIN], &[6]);
    let y = host(&ops::sigmoid(&x).unwrap());
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert_eq!(y[2], 1.0);
    assert_eq!(y[3], 1.0);
    assert_eq!(y[4], 1.0);
    assert!(y[0] >= 0.0 && y[0] < 1e-30 && y[1] >= 0.0 && y[1] < 1e-30 && y[5] == 0.0, "{y:?}");
}

/// Batch norm where eps dominates: per-channel variance ~1e-7 << eps = 1e-5, so an eps placed
/// wrongly (or a different eps) changes the output by O(1). atol 1e-4 + rtol 1e-4.
#[test]
fn batch_norm_uses_eps_inside_the_sqrt() {
    let (n, c, plane) = (4, 3, 5);
    let xv: Vec<f32> = rand_vec(n * c * plane, 21, -1.0, 1.0).iter().map(|v| 0.5 + v * 5e-4).collect();
    let (gv, bv) = (vec![1.0, 2.0, 0.5], vec![0.0, 0.1, -0.1]);
    let state = bn_state(vec![0.0; c], vec![1.0; c]);
    let y = ops::batch_norm(
        &tensor(xv.clone(), &[n, c, 1, plane]),
        &tensor(gv.clone(), &[c]),
        &tensor(bv.clone(), &[c]),
        &state,
        true,
    )
    .unwrap();
    let (want, rm, rv) = batch_norm_train_ref(&xv, n, c, plane, &gv, &bv, &[0.0; 3], &[1.0; 3], 0.1, 1e-5);
    assert_close("bn small-variance forward", &host(&y), &want, 1e-4, 1e-4);
    assert_close("bn small-variance running_mean", &host(&state.running_mean), &rm, 1e-5, 1e-6);
    assert_close("bn small-variance running_var", &host(&state.running_var), &rv, 1e-5, 1e-6);
}

/// Two training steps in a row update the running statistics cumulatively (PyTorch's
/// running = (1 - momentum) running + momentum batch, applied per call). atol 1e-6 + rtol 1e-5.
#[test]
fn batch_norm_running_stats_accumulate_over_steps() {
    let (n, c) = (3, 2);
    let state = bn_state(vec![0.0; c], vec![1.0; c]);
    let (g, b) = (tensor(vec![1.0; c], &[c]), tensor(vec![0.0; c], &[c]));
    let (mut rm, mut rv) = (vec![0.0f32; c], vec![1.0f32; c]);
    for step in 0..3u64 {
        let xv = rand_vec(n * c, 100 + step, -2.0, 2.0);
        ops::batch_norm(&tensor(xv.clone(), &[n, c]), &g, &b, &state, true).unwrap();
        let (_, rm2, rv2) = batch_norm_train_ref(&xv, n, c, 1, &[1.0; 2], &[0.0; 2], &rm, &rv, 0.1, 1e-5);
        assert_close("running_mean after step", &host(&state.running_mean), &rm2, 1e-5, 1e-6);
        assert_close("running_var after step", &host(&state.running_var), &rv2, 1e-5, 1e-6);
        rm = rm2.iter().map(|&v| v as f32).collect();
        rv = rv2.iter().map(|&v| v as f32).collect();
    }
}

/// Max pool 3x3/2 pad 1 on a hand-made plane with ties: the gradient goes to the first maximum in
/// row-major order, and a window whose in-bounds values are all negative returns the largest of
/// them (padding is -inf, not 0). Exact.
#[test]
fn max_pool2d_ties_route_to_first_maximum() {
    #[rustfmt::skip]
    let xv = vec![
        -5.0, -4.0, 1.0,
        -3.0, -6.0, 1.0,
         1.0,  1.0, 1.0f32,
    ];
    let x = leaf(xv.clone(), &[1, 1, 3, 3]);
    let y = ops::max_pool2d(&x, 3, 2, 1).unwrap();
    assert_eq!(y.dims(), &[1, 1, 2, 2]);
    // Windows: rows/cols {-1,0,1} x {-1,0,1}: max(-5,-4,-3,-6) = -3; others contain a 1.
    assert_eq!(host(&y), vec![-3.0, 1.0, 1.0, 1.0]);
    let g = backward_grad(&y, &[1.0, 10.0, 100.0, 1000.0], &x);
    // (0,0) -> index 3 (-3). (0,1): cols 1..=2, rows 0..=1 -> first 1 at index 2.
    // (1,0): rows 1..=2, cols 0..=1 -> first 1 at index 6. (1,1): rows 1..=2, cols 1..=2 -> index 5.
    assert_eq!(g, vec![0.0, 0.0, 10.0, 1.0, 0.0, 1000.0, 100.0, 0.0, 0.0]);
}

/// Equal values of different sign (0.0 and -0.0) resolve to the first in row-major order, as
/// the gradient routing and the CUDA kernel do: the forward keeps the first one's sign bit.
#[test]
fn max_pool2d_signed_zero_ties_keep_the_first() {
    #[rustfmt::skip]
    let xv = vec![
        -1.0, -0.0,  0.0,
        -1.0,  0.0, -0.0,
        -1.0, -1.0, -1.0f32,
    ];
    let x = leaf(xv, &[1, 1, 3, 3]);
    let y = host(&ops::max_pool2d(&x, 2, 1, 0).unwrap());
    // Windows (row-major firsts): -0 | -0 | 0 | 0.
    let signs: Vec<bool> = y.iter().map(|v| v.is_sign_negative()).collect();
    assert_eq!(y, vec![0.0; 4]);
    assert_eq!(signs, vec![true, true, false, false]);
}

/// Max pool propagates NaN like PyTorch: a window containing NaN outputs NaN and its gradient
/// goes to the (first) NaN. Exact.
#[test]
fn max_pool2d_propagates_nan() {
    let xv = vec![1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0f32];
    let x = leaf(xv, &[1, 1, 3, 3]);
    let y = ops::max_pool2d(&x, 2, 1, 0).unwrap();
    let yv = host(&y);
    assert!(yv[0].is_nan() && yv[1].is_nan(), "{yv:?}");
    assert_eq!(&yv[2..], &[8.0, 9.0]);
    let g = backward_grad(&y, &[1.0, 2.0, 3.0, 4.0], &x);
    assert_eq!(g, vec![0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0]);
}

/// BCE at logits exactly +-100 with hard targets and pos_weight: finite, and equal to the f64
/// reference (rtol 1e-6): the correct terms are 0 (confidently right) and 100 * weight (wrong).
#[test]
fn bce_with_logits_extreme_logits_are_exact() {
    let xv = vec![100.0, -100.0, 100.0, -100.0, 100.0, -100.0f32];
    let tv = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0f32];
    let pwv = vec![3.0, 0.5f32];
    let (x, t, pw) = (leaf(xv.clone(), &[3, 2]), tensor(tv.clone(), &[3, 2]), tensor(pwv.clone(), &[2]));
    for weighted in [false, true] {
        x.zero_grad();
        let pw_ref = weighted.then_some(&pwv[..]);
        let loss = ops::bce_with_logits(&x, &t, weighted.then_some(&pw)).unwrap();
        let got = loss.to_scalar().unwrap();
        let want = bce_ref(&xv, &tv, pw_ref, 2);
        // Unweighted: (0 + 0 + 100 + 100 + 0 + 100) / 6 = 50; weighted: (0 + 0 + 100 + 50 + 0 + 50) / 6.
        let expected = if weighted { 200.0 / 6.0 } else { 50.0 };
        assert!((want - expected).abs() < 1e-9);
        assert!(got.is_finite());
        assert_close("bce extreme loss", &[got], &[want], 1e-6, 0.0);
        loss.backward().unwrap();
        let g = grad_of(&x);
        assert!(g.iter().all(|v| v.is_finite()));
        assert_close("bce extreme grad", &g, &bce_backward_ref(&xv, &tv, pw_ref, 2), 1e-6, 1e-12);
    }
}

/// Dropout over 200k elements (the parallel mask path): the zeroed fraction is within 0.01 of p
/// (> 20 standard deviations), kept values are exactly 1 / (1 - p) for x = 1, the same seed gives
/// the same mask, a different seed a different one, and element i of the mask depends only on
/// (seed, i) (a shorter tensor's mask is a prefix of a longer one's).
#[test]
fn dropout_statistics_and_determinism() {
    let n = 200_003;
    let x = tensor(vec![1.0; n], &[n]);
    for &p in &[0.1f32, 0.2, 0.5, 0.8] {
        let y = host(&ops::dropout(&x, p, true, 1234).unwrap());
        let zeros = y.iter().filter(|&&v| v == 0.0).count();
        let frac = zeros as f64 / n as f64;
        assert!((frac - p as f64).abs() < 0.01, "p {p}: zeroed fraction {frac}");
        let keep = 1.0f32 / (1.0 - p);
        assert!(y.iter().all(|&v| v == 0.0 || v == keep), "p {p}: kept values must be exactly 1/(1-p)");
        let again = host(&ops::dropout(&x, p, true, 1234).unwrap());
        assert_eq!(y, again, "same seed, same mask");
        let other = host(&ops::dropout(&x, p, true, 1235).unwrap());
        let differ = y.iter().zip(&other).filter(|(a, b)| a != b).count();
        // Two independent masks differ in 2p(1-p) of the elements.
        let expect = 2.0 * p as f64 * (1.0 - p as f64);
        assert!((differ as f64 / n as f64 - expect).abs() < 0.01, "p {p}: different seeds differ in {differ}");
        let short = host(&ops::dropout(&tensor(vec![1.0; 40_000], &[40_000]), p, true, 1234).unwrap());
        assert_eq!(&y[..40_000], &short[..], "mask element i depends only on (seed, i)");
    }
    // Eval mode and p = 0 are the identity.
    assert_eq!(host(&ops::dropout(&x, 0.5, false, 1).unwrap()), vec![1.0; n]);
    assert_eq!(host(&ops::dropout(&x, 0.0, true, 1).unwrap()), vec![1.0; n]);
    // p outside [0, 1) is rejected.
    assert!(matches!(ops::dropout(&x, 1.0, true, 1), Err(Error::InvalidArgument { .. })));
    assert!(matches!(ops::dropout(&x, -0.1, true, 1), Err(Error::InvalidArgument { .. })));
}

/// Global average pool and batch norm over large planes keep f64-level accuracy where the kernels
/// accumulate in f64, and stay within rtol 1e-5 where they accumulate in f32.
#[test]
fn large_plane_reductions() {
    let s = Nchw { n: 2, c: 3, h: 64, w: 65 };
    let xv = rand_vec(s.len(), 5, 0.0, 1.0);
    let y = ops::global_avg_pool(&tensor(xv.clone(), &s.dims())).unwrap();
    assert_close("global_avg_pool large plane", &host(&y), &global_avg_pool_ref(&xv, s), 1e-5, 1e-6);
    let state = bn_state(vec![0.0; 3], vec![1.0; 3]);
    let ones = tensor(vec![1.0; 3], &[3]);
    let zeros = tensor(vec![0.0; 3], &[3]);
    let out = ops::batch_norm(&tensor(xv.clone(), &s.dims()), &ones, &zeros, &state, true).unwrap();
    let (want, rm, rv) =
        batch_norm_train_ref(&xv, 2, 3, 64 * 65, &[1.0; 3], &[0.0; 3], &[0.0; 3], &[1.0; 3], 0.1, 1e-5);
    assert_close("batch_norm large plane", &host(&out), &want, 1e-4, 1e-4);
    assert_close("running_mean large plane", &host(&state.running_mean), &rm, 1e-5, 1e-6);
    assert_close("running_var large plane", &host(&state.running_var), &rv, 1e-5, 1e-6);
}

/// DenseNet's layer input, relu(batch_norm(cat(parts))) in eval mode, computed at inference
/// straight from the parts: the same bits as the three separate ops, at batch 1 and 3, and a
/// typed error for parts that cannot be concatenated or parameters of the wrong size.
#[test]
fn concatenated_norm_relu_equals_the_separate_ops() {
    use cxr::{ops, Device, Tensor};
    for batch in [1, 3] {
        let parts: Vec<Tensor> = [5, 3, 8]
            .iter()
            .enumerate()
            .map(|(i, &c)| Tensor::rand_uniform([batch, c, 6, 7], -2.0, 2.0, 40 + i as u64, Device::Cpu).unwrap())
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let state = ops::BatchNormState {
            running_mean: Tensor::rand_uniform([16], -0.5, 0.5, 1, Device::Cpu).unwrap(),
            running_var: Tensor::rand_uniform([16], 0.5, 2.0, 2, Device::Cpu).unwrap(),
            momentum: 0.1,
            eps: 1e-5,
        };
        let gamma = Tensor::rand_uniform([16], 0.5, 1.5, 3, Device::Cpu).unwrap();
        let beta = Tensor::rand_uniform([16], -0.5, 0.5, 4, Device::Cpu).unwrap();
        let _g = cxr::no_grad();
        let cat = ops::cat_channels(&refs).unwrap();
        let separate = ops::relu(&ops::batch_norm(&cat, &gamma, &beta, &state, false).unwrap()).unwrap();
        let fused = ops::cat_batch_norm_relu(&refs, &gamma, &beta, &state, false).unwrap();
        assert_eq!(fused.dims(), [batch, 16, 6, 7]);
        assert_eq!(fused.to_vec().unwrap(), separate.to_vec().unwrap(), "batch {batch}");

        let short = Tensor::zeros([15], Device::Cpu).unwrap();
        let err = ops::cat_batch_norm_relu(&refs, &short, &beta, &state, false);
        assert!(matches!(err, Err(cxr::Error::ShapeMismatch { .. })), "{err:?}");
        let odd = Tensor::zeros([batch, 2, 6, 6], Device::Cpu).unwrap();
        let err = ops::cat_batch_norm_relu(&[&parts[0], &odd], &gamma, &beta, &state, false);
        assert!(matches!(err, Err(cxr::Error::ShapeMismatch { .. })), "{err:?}");
    }
}
