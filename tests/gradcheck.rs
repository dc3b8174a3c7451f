//! Finite-difference checks of every backward, through the public autograd API (see
//! `common::gradcheck`): L = sum(f(x) * r) for a fixed random r, analytic gradients from
//! `backward_with(r)` and `Tensor::grad()`, numeric ones from central differences in f64.
//!
//! Tolerances, per gradient element, |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|):
//! - `LINEAR_TOL` (step 1e-2, atol 5e-4, rtol 1e-3) for ops that are linear or piecewise linear in
//!   each input element (central differences are then exact up to f32 rounding of the forward);
//! - `SMOOTH_TOL` (step 1e-2, atol 1e-3, rtol 1e-2) for smooth nonlinear ops;
//! - the chained network uses step 1e-3 (smaller, to stay clear of ReLU/max-pool kinks), atol 1e-3,
//!   rtol 1e-2.

mod common;

use common::*;
use cxr::ops::{self, BatchNormState};
use cxr::Tensor;

fn state(c: usize, seed: u64) -> BatchNormState {
    BatchNormState {
        running_mean: tensor(rand_vec(c, seed, -0.5, 0.5), &[c]),
        running_var: tensor(rand_vec(c, seed ^ 1, 0.5, 1.5), &[c]),
        momentum: 0.1,
        eps: 1e-5,
    }
}

#[test]
fn relu_grad() {
    // Inputs at least 0.05 from the kink at 0; step 1e-2.
    let x = var(away_from_zero(2 * 3 * 5, 1), &[2, 3, 5]);
    gradcheck("relu", &[x], LINEAR_TOL, 10, |t| ops::relu(&t[0]));
}

#[test]
fn sigmoid_grad() {
    let x = var(rand_vec(3 * 7, 2, -4.0, 4.0), &[3, 7]);
    gradcheck("sigmoid", &[x], SMOOTH_TOL, 11, |t| ops::sigmoid(&t[0]));
}

#[test]
fn add_grad() {
    let a = var(rand_vec(24, 3, -1.0, 1.0), &[2, 3, 4]);
    let b = var(rand_vec(24, 4, -1.0, 1.0), &[2, 3, 4]);
    gradcheck("add", &[a.clone(), b.clone()], LINEAR_TOL, 12, |t| ops::add(&t[0], &t[1]));
    // Only one operand requires grad: the other gets none.
    gradcheck("add (b constant)", &[a, constant(b.data, &b.dims)], LINEAR_TOL, 12, |t| ops::add(&t[0], &t[1]));
}

#[test]
fn mul_grad() {
    let a = var(rand_vec(15, 5, -2.0, 2.0), &[3, 5]);
    let b = var(rand_vec(15, 6, -2.0, 2.0), &[3, 5]);
    gradcheck("mul", &[a.clone(), b.clone()], LINEAR_TOL, 13, |t| ops::mul(&t[0], &t[1]));
    gradcheck("mul (a constant)", &[constant(a.data, &a.dims), b], LINEAR_TOL, 13, |t| ops::mul(&t[0], &t[1]));
}

#[test]
fn scale_grad() {
    let a = var(rand_vec(10, 7, -2.0, 2.0), &[10]);
    gradcheck("scale", &[a], LINEAR_TOL, 14, |t| ops::scale(&t[0], -1.75));
}

#[test]
fn matmul_grad() {
    let a = var(rand_vec(3 * 5, 8, -1.0, 1.0), &[3, 5]);
    let b = var(rand_vec(5 * 4, 9, -1.0, 1.0), &[5, 4]);
    gradcheck("matmul", &[a, b], LINEAR_TOL, 15, |t| ops::matmul(&t[0], &t[1]));
    // Batch of one row, inner dimension one.
    let a = var(rand_vec(1, 10, -1.0, 1.0), &[1, 1]);
    let b = var(rand_vec(7, 11, -1.0, 1.0), &[1, 7]);
    gradcheck("matmul 1x1x7", &[a, b], LINEAR_TOL, 16, |t| ops::matmul(&t[0], &t[1]));
}

#[test]
fn linear_grad() {
    let x = var(rand_vec(4 * 6, 12, -1.0, 1.0), &[4, 6]);
    let w = var(rand_vec(3 * 6, 13, -1.0, 1.0), &[3, 6]);
    let b = var(rand_vec(3, 14, -1.0, 1.0), &[3]);
    gradcheck("linear (x, w, b)", &[x.clone(), w.clone(), b], LINEAR_TOL, 17, |t| {
        ops::linear(&t[0], &t[1], Some(&t[2]))
    });
    gradcheck("linear without bias", &[x, w], LINEAR_TOL, 18, |t| ops::linear(&t[0], &t[1], None));
    // Frozen weight: only x and b get gradients.
    let x = var(rand_vec(5, 15, -1.0, 1.0), &[1, 5]);
    let w = constant(rand_vec(2 * 5, 16, -1.0, 1.0), &[2, 5]);
    let b = var(rand_vec(2, 17, -1.0, 1.0), &[2]);
    gradcheck("linear (w frozen, batch 1)", &[x, w, b], LINEAR_TOL, 19, |t| ops::linear(&t[0], &t[1], Some(&t[2])));
}

/// (n, c, h, w, out channels, kernel, stride, pad, bias)
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize, bool);

/// conv2d w.r.t. x, w and b over several geometries (the kernels are being rewritten for speed;
/// these pin the semantics).
#[test]
fn conv2d_grad() {
    // (n, c, h, w, out, k, stride, pad, bias)
    let cases: [ConvCase; 5] = [
        (2, 3, 7, 6, 4, 3, 2, 1, true), // stride 2 pad 1 (ResNet downsampling), odd sizes
        (1, 4, 5, 5, 3, 1, 1, 0, true), // 1x1 (bottleneck / DenseNet transition)
        (2, 2, 6, 5, 3, 3, 1, 1, false),
        (1, 2, 6, 6, 2, 2, 2, 0, true),
        (1, 1, 4, 5, 2, 3, 2, 0, true),
    ];
    for (i, &(n, c, h, w, o, k, stride, pad, bias)) in cases.iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let mut inputs = vec![
            var(rand_vec(n * c * h * w, seed, -1.0, 1.0), &[n, c, h, w]),
            var(rand_vec(o * c * k * k, seed + 1, -1.0, 1.0), &[o, c, k, k]),
        ];
        if bias {
            inputs.push(var(rand_vec(o, seed + 2, -1.0, 1.0), &[o]));
        }
        let name = format!("conv2d {n}x{c}x{h}x{w} -> {o}, k{k} s{stride} p{pad} bias {bias}");
        gradcheck(&name, &inputs, LINEAR_TOL, seed + 3, |t| ops::conv2d(&t[0], &t[1], t.get(2), stride, pad));
    }
}

#[test]
fn batch_norm_train_grad() {
    // 2d: x [3, 2, 3, 3], 1d: x [6, 3]; gamma and beta per channel. A fresh state per call (the
    // training forward does not read the running statistics, it only updates them).
    let x = var(rand_vec(3 * 2 * 3 * 3, 20, -2.0, 2.0), &[3, 2, 3, 3]);
    let g = var(rand_vec(2, 21, 0.5, 1.5), &[2]);
    let b = var(rand_vec(2, 22, -0.5, 0.5), &[2]);
    gradcheck("batch_norm 2d train", &[x, g, b], SMOOTH_TOL, 23, |t| {
        ops::batch_norm(&t[0], &t[1], &t[2], &state(2, 1), true)
    });
    let x = var(rand_vec(6 * 3, 24, -2.0, 2.0), &[6, 3]);
    let g = var(rand_vec(3, 25, 0.5, 1.5), &[3]);
    let b = var(rand_vec(3, 26, -0.5, 0.5), &[3]);
    gradcheck("batch_norm 1d train", &[x, g, b], SMOOTH_TOL, 27, |t| {
        ops::batch_norm(&t[0], &t[1], &t[2], &state(3, 2), true)
    });
}

#[test]
fn batch_norm_eval_grad() {
    let st = state(3, 3);
    let x = var(rand_vec(2 * 3 * 2 * 3, 28, -2.0, 2.0), &[2, 3, 2, 3]);
    let g = var(rand_vec(3, 29, 0.5, 1.5), &[3]);
    let b = var(rand_vec(3, 30, -0.5, 0.5), &[3]);
    gradcheck("batch_norm 2d eval", &[x, g, b], LINEAR_TOL, 31, |t| ops::batch_norm(&t[0], &t[1], &t[2], &st, false));
    let x = var(rand_vec(4 * 3, 32, -2.0, 2.0), &[4, 3]);
    let g = var(rand_vec(3, 33, 0.5, 1.5), &[3]);
    let b = var(rand_vec(3, 34, -0.5, 0.5), &[3]);
    gradcheck("batch_norm 1d eval", &[x, g, b], LINEAR_TOL, 35, |t| ops::batch_norm(&t[0], &t[1], &t[2], &st, false));
}

#[test]
fn max_pool2d_grad() {
    // Pairwise-distinct values 0.05 apart (> 2 * step): the arg-max of every window is stable.
    for (i, &(k, stride, pad)) in [(3usize, 2usize, 1usize), (2, 2, 0), (3, 1, 1), (2, 1, 1)].iter().enumerate() {
        let dims = [2, 2, 5, 7];
        let x = var(distinct_vec(2 * 2 * 5 * 7, 40 + i as u64, 0.05, -3.5), &dims);
        gradcheck(&format!("max_pool2d k{k} s{stride} p{pad}"), &[x], LINEAR_TOL, 41, |t| {
            ops::max_pool2d(&t[0], k, stride, pad)
        });
    }
}

#[test]
fn avg_pool2d_grad() {
    for &(k, stride, pad) in &[(2usize, 2usize, 0usize), (3, 2, 1), (3, 1, 1)] {
        let x = var(rand_vec(2 * 3 * 5 * 6, 50, -1.0, 1.0), &[2, 3, 5, 6]);
        gradcheck(&format!("avg_pool2d k{k} s{stride} p{pad}"), &[x], LINEAR_TOL, 51, |t| {
            ops::avg_pool2d(&t[0], k, stride, pad)
        });
    }
}

#[test]
fn global_avg_pool_grad() {
    let x = var(rand_vec(2 * 3 * 3 * 5, 52, -1.0, 1.0), &[2, 3, 3, 5]);
    gradcheck("global_avg_pool", &[x], LINEAR_TOL, 53, |t| ops::global_avg_pool(&t[0]));
}

#[test]
fn cat_channels_grad() {
    let a = var(rand_vec(2 * 2 * 3, 60, -1.0, 1.0), &[2, 1, 2, 3]);
    let b = constant(rand_vec(2 * 3 * 2 * 3, 61, -1.0, 1.0), &[2, 3, 2, 3]);
    let c = var(rand_vec(2 * 2 * 2 * 3, 62, -1.0, 1.0), &[2, 2, 2, 3]);
    gradcheck("cat_channels", &[a, b, c], LINEAR_TOL, 63, |t| ops::cat_channels(&[&t[0], &t[1], &t[2]]));
    // The same tensor twice: its gradient is the sum of both blocks.
    let a = var(rand_vec(3 * 2, 64, -1.0, 1.0), &[3, 2]);
    gradcheck("cat_channels (x, x)", &[a], LINEAR_TOL, 65, |t| ops::cat_channels(&[&t[0], &t[0]]));
}

#[test]
fn dropout_grad() {
    // A fixed seed fixes the mask, so dropout is linear in x.
    let x = var(rand_vec(4 * 9, 70, -1.0, 1.0), &[4, 9]);
    gradcheck("dropout p=0.3", std::slice::from_ref(&x), LINEAR_TOL, 71, |t| ops::dropout(&t[0], 0.3, true, 777));
    gradcheck("dropout eval", &[x], LINEAR_TOL, 72, |t| ops::dropout(&t[0], 0.3, false, 777));
}

#[test]
fn bce_with_logits_grad() {
    let (rows, classes) = (4, 3);
    let x = var(rand_vec(rows * classes, 80, -4.0, 4.0), &[rows, classes]);
    let hard = constant(rand_ties(rows * classes, 81, 1, 1.0).iter().map(|v| v.abs()).collect(), &[rows, classes]);
    let soft = constant(rand_vec(rows * classes, 82, 0.0, 1.0), &[rows, classes]);
    let pw = constant(vec![0.5, 2.0, 7.5], &[classes]);
    for (name, t) in [("hard", &hard), ("soft", &soft)] {
        gradcheck(&format!("bce_with_logits {name} targets"), &[x.clone(), t.clone()], SMOOTH_TOL, 83, |t| {
            ops::bce_with_logits(&t[0], &t[1], None)
        });
        gradcheck(
            &format!("bce_with_logits {name} targets, pos_weight"),
            &[x.clone(), t.clone(), pw.clone()],
            SMOOTH_TOL,
            84,
            |t| ops::bce_with_logits(&t[0], &t[1], Some(&t[2])),
        );
    }
}

#[test]
fn reshape_grad() {
    let x = var(rand_vec(2 * 3 * 4, 90, -1.0, 1.0), &[2, 3, 4]);
    gradcheck("reshape", std::slice::from_ref(&x), LINEAR_TOL, 91, |t| t[0].reshape([4, 6]));
    gradcheck("flatten", std::slice::from_ref(&x), LINEAR_TOL, 92, |t| t[0].flatten());
    // Through an op on the view: sigmoid(reshape(x)).
    gradcheck("sigmoid(reshape)", &[x], SMOOTH_TOL, 93, |t| ops::sigmoid(&t[0].reshape([24])?));
}

/// conv -> batch norm (train) -> relu -> max pool -> flatten -> linear -> BCE with pos_weight,
/// every parameter checked at once.
#[test]
fn small_network_grad() {
    let (n, c, h, w, o, classes) = (2, 2, 6, 6, 3, 2);
    let inputs = [
        var(rand_vec(n * c * h * w, 200, -1.0, 1.0), &[n, c, h, w]), // x
        var(rand_vec(o * c * 9, 201, -0.5, 0.5), &[o, c, 3, 3]),     // conv weight
        var(rand_vec(o, 202, -0.1, 0.1), &[o]),                      // conv bias
        var(rand_vec(o, 203, 0.8, 1.2), &[o]),                       // bn gamma
        var(rand_vec(o, 204, -0.2, 0.2), &[o]),                      // bn beta
        var(rand_vec(classes * o * 9, 205, -0.5, 0.5), &[classes, o * 9]), // fc weight
        var(rand_vec(classes, 206, -0.1, 0.1), &[classes]),          // fc bias
        constant(vec![1.0, 0.0, 0.0, 1.0], &[n, classes]),           // targets
        constant(vec![2.0, 0.5], &[classes]),                        // pos_weight
    ];
    let net = |t: &[Tensor]| -> cxr::Result<Tensor> {
        let y = ops::conv2d(&t[0], &t[1], Some(&t[2]), 1, 1)?;
        let y = ops::batch_norm(&y, &t[3], &t[4], &state(3, 9), true)?;
        let y = ops::relu(&y)?;
        let y = ops::max_pool2d(&y, 2, 2, 0)?;
        let y = y.flatten()?;
        let y = ops::linear(&y, &t[5], Some(&t[6]))?;
        ops::bce_with_logits(&y, &t[7], Some(&t[8]))
    };
    gradcheck("conv-bn-relu-maxpool-flatten-linear-bce", &inputs, Tol { eps: 1e-3, atol: 1e-3, rtol: 1e-2 }, 207, net);
}
