//! Autograd semantics (PyTorch's): gradient accumulation, retain_grad, shared inputs, no_grad,
//! detach, seeds, and typed errors instead of panics.
//!
//! Numeric comparisons use `assert_close` with the tolerance stated at each call
//! (|got - want| <= atol + rtol * |want|).

mod common;

use common::*;
use cxr::ops::{self, BatchNormState};
use cxr::{Error, Tensor};

/// x [4, 3] (constant), w [2, 3], b [2], targets [4, 2]: loss = bce(linear(x, w, b), t).
struct Problem {
    x: Tensor,
    w: Tensor,
    b: Tensor,
    t: Tensor,
}

fn problem() -> Problem {
    Problem {
        x: tensor(rand_vec(12, 1, -1.0, 1.0), &[4, 3]),
        w: leaf(rand_vec(6, 2, -1.0, 1.0), &[2, 3]),
        b: leaf(rand_vec(2, 3, -1.0, 1.0), &[2]),
        t: tensor(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0], &[4, 2]),
    }
}

impl Problem {
    fn loss(&self) -> Tensor {
        let z = ops::linear(&self.x, &self.w, Some(&self.b)).unwrap();
        ops::bce_with_logits(&z, &self.t, None).unwrap()
    }
}

fn scaled(v: &[f32], s: f64) -> Vec<f64> {
    v.iter().map(|&x| x as f64 * s).collect()
}

#[test]
fn leaf_gradients_accumulate_until_zero_grad() {
    let p = problem();
    let pass1 = p.loss().backward().unwrap();
    let g1 = grad_of(&p.w);
    let gb1 = grad_of(&p.b);
    // The per-pass result holds this pass's gradient.
    assert_eq!(host(pass1.get(&p.w).unwrap()), g1);
    let snapshot = p.w.grad().unwrap();

    // A second forward/backward adds into .grad (PyTorch accumulation); rtol 1e-6.
    let pass2 = p.loss().backward().unwrap();
    assert_close("w.grad after two passes", &grad_of(&p.w), &scaled(&g1, 2.0), 1e-6, 1e-9);
    assert_close("b.grad after two passes", &grad_of(&p.b), &scaled(&gb1, 2.0), 1e-6, 1e-9);
    // ... while each pass's own result is not accumulated.
    assert_eq!(host(pass2.get(&p.w).unwrap()), g1);
    // A gradient read earlier is a snapshot: later passes do not change it behind the caller's back
    // (PyTorch accumulates out of place when the old gradient is still referenced).
    assert_eq!(host(&snapshot), g1);

    // zero_grad clears (set_to_none); the next pass starts from scratch.
    p.w.zero_grad();
    assert!(p.w.grad().is_none());
    p.loss().backward().unwrap();
    assert_close32("w.grad after zero_grad", &grad_of(&p.w), &g1, 1e-6, 1e-9);
    // b was not zeroed: three passes accumulated.
    assert_close("b.grad after three passes", &grad_of(&p.b), &scaled(&gb1, 3.0), 1e-6, 1e-9);
}

#[test]
fn backward_twice_on_the_same_graph_accumulates() {
    let p = problem();
    let loss = p.loss();
    loss.backward().unwrap();
    let g1 = grad_of(&p.w);
    loss.backward().unwrap();
    assert_close("w.grad after backward twice", &grad_of(&p.w), &scaled(&g1, 2.0), 1e-6, 1e-9);
}

#[test]
fn loss_gradient_matches_closed_form() {
    // d mean-BCE / d w = (sigmoid(z) - t)^T x / (N C); exercised through linear's backward.
    let p = problem();
    p.loss().backward().unwrap();
    let (xv, wv, bv, tv) = (host(&p.x), host(&p.w), host(&p.b), host(&p.t));
    let z: Vec<f32> = linear_ref(&xv, &wv, Some(&bv), 4, 3, 2).iter().map(|&v| v as f32).collect();
    let dz: Vec<f32> = bce_backward_ref(&z, &tv, None, 2).iter().map(|&v| v as f32).collect();
    let (_, dw, db) = linear_backward_ref(&xv, &wv, &dz, 4, 3, 2);
    assert_close("w.grad closed form", &grad_of(&p.w), &dw, 1e-5, 1e-7);
    assert_close("b.grad closed form", &grad_of(&p.b), &db, 1e-5, 1e-7);
}

#[test]
fn retain_grad_keeps_intermediate_gradients_only_when_asked() {
    let x = tensor(rand_vec(5 * 4, 10, -1.0, 1.0), &[5, 4]);
    let w1 = leaf(rand_vec(6 * 4, 11, -1.0, 1.0), &[6, 4]);
    let w2 = leaf(rand_vec(3 * 6, 12, -1.0, 1.0), &[3, 6]);
    let t = tensor(rand_ties(15, 13, 1, 1.0).iter().map(|v| v.abs()).collect(), &[5, 3]);
    let h = ops::linear(&x, &w1, None).unwrap();
    let a = ops::relu(&h).unwrap();
    let z = ops::linear(&a, &w2, None).unwrap();
    z.retain_grad();
    let loss = ops::bce_with_logits(&z, &t, None).unwrap();
    let grads = loss.backward().unwrap();

    // d loss / d z for the mean BCE: (sigmoid(z) - t) / len. atol 1e-7 + rtol 1e-5.
    let zv = host(&z);
    let want = bce_backward_ref(&zv, &host(&t), None, 3);
    assert_close("retained z.grad", &grad_of(&z), &want, 1e-5, 1e-7);
    assert_close("retained z in Gradients", &host(grads.get(&z).unwrap()), &want, 1e-5, 1e-7);
    // d loss / d a = dz W2 (the gradient that reached the ReLU output), checked through retain on a
    // second pass.
    assert!(
        h.grad().is_none() && a.grad().is_none() && loss.grad().is_none(),
        "non-retained intermediates keep no grad"
    );
    assert!(grads.get(&h).is_none() && grads.get(&a).is_none());
    assert!(grads.get(&w1).is_some() && grads.get(&w2).is_some());
    assert!(grads.get(&x).is_none() && x.grad().is_none(), "a leaf without requires_grad gets no grad");
    assert_eq!(grads.len(), 3, "w1, w2 and the retained z");

    a.retain_grad();
    w1.zero_grad();
    w2.zero_grad();
    z.zero_grad();
    ops::bce_with_logits(&z, &t, None).unwrap().backward().unwrap();
    let dz: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    let (da, _, _) = linear_backward_ref(&host(&a), &host(&w2), &dz, 5, 6, 3);
    assert_close("retained a.grad", &grad_of(&a), &da, 1e-5, 1e-7);
}

#[test]
fn retained_root_gets_its_seed() {
    let x = leaf(vec![1.0, -2.0, 3.0], &[3]);
    let y = ops::scale(&x, 2.0).unwrap();
    y.retain_grad();
    y.backward_with(&tensor(vec![0.5, 1.0, -1.0], &[3])).unwrap();
    assert_eq!(grad_of(&y), vec![0.5, 1.0, -1.0]);
    assert_eq!(grad_of(&x), vec![1.0, 2.0, -2.0]);
}

#[test]
fn tensor_used_twice_gets_summed_gradients() {
    let xv = rand_vec(6, 20, -1.0, 1.0);
    let dy = rand_vec(6, 21, -1.0, 1.0);
    let seed = tensor(dy.clone(), &[2, 3]);

    // x + x: gradient 2 dy (exact).
    let x = leaf(xv.clone(), &[2, 3]);
    ops::add(&x, &x).unwrap().backward_with(&seed).unwrap();
    assert_close("d(x+x)/dx", &grad_of(&x), &scaled(&dy, 2.0), 0.0, 0.0);

    // x * x: gradient 2 x dy (rtol 1.2e-7).
    let x = leaf(xv.clone(), &[2, 3]);
    ops::mul(&x, &x).unwrap().backward_with(&seed).unwrap();
    let want: Vec<f64> = xv.iter().zip(&dy).map(|(&x, &d)| 2.0 * x as f64 * d as f64).collect();
    assert_close("d(x*x)/dx", &grad_of(&x), &want, 1.2e-7, 1e-30);

    // Residual: y = relu(x W^T) + x, so dx = dy + (relu'(h) * dy) W. atol 1e-6 + rtol 1e-5.
    let x = leaf(xv.clone(), &[2, 3]);
    let wv = rand_vec(9, 22, -1.0, 1.0);
    let w = tensor(wv.clone(), &[3, 3]);
    let h = ops::linear(&x, &w, None).unwrap();
    let y = ops::add(&ops::relu(&h).unwrap(), &x).unwrap();
    y.backward_with(&seed).unwrap();
    let hv = host(&h);
    let dh: Vec<f32> = relu_backward_ref(&hv, &dy).iter().map(|&v| v as f32).collect();
    let (dx_branch, _, _) = linear_backward_ref(&xv, &wv, &dh, 2, 3, 3);
    let want: Vec<f64> = dx_branch.iter().zip(&dy).map(|(&a, &d)| a + d as f64).collect();
    assert_close("residual dx", &grad_of(&x), &want, 1e-5, 1e-6);
    assert!(w.grad().is_none());
}

#[test]
fn no_grad_records_nothing() {
    let x = leaf(vec![1.0, -1.0, 2.0], &[3]);
    let y = {
        let _guard = cxr::no_grad();
        assert!(!cxr::autograd::is_grad_enabled());
        let y = ops::scale(&ops::relu(&x).unwrap(), 3.0).unwrap();
        assert!(!y.requires_grad());
        assert!(y.is_leaf());
        // Grad mode is per thread: another thread still records.
        std::thread::spawn(|| {
            let x = leaf(vec![1.0], &[1]);
            assert!(ops::relu(&x).unwrap().requires_grad());
        })
        .join()
        .unwrap();
        y
    };
    assert!(cxr::autograd::is_grad_enabled(), "guard restores grad mode");
    assert_eq!(host(&y), vec![3.0, 0.0, 6.0]);
    match y.backward_with(&tensor(vec![1.0; 3], &[3])) {
        Err(Error::Autograd(msg)) => assert!(msg.contains("does not require grad"), "{msg}"),
        other => panic!("expected Error::Autograd, got {other:?}"),
    }
    assert!(x.grad().is_none());
    // After the guard, ops record again.
    assert!(ops::relu(&x).unwrap().requires_grad());
}

#[test]
fn leaves_without_requires_grad_get_no_grad() {
    let x = tensor(rand_vec(6, 30, -1.0, 1.0), &[2, 3]);
    let w = leaf(rand_vec(6, 31, -1.0, 1.0), &[2, 3]);
    let b = tensor(vec![0.1, 0.2], &[2]);
    let y = ops::linear(&x, &w, Some(&b)).unwrap();
    let grads = y.backward_with(&tensor(vec![1.0; 4], &[2, 2])).unwrap();
    assert!(x.grad().is_none() && b.grad().is_none());
    assert!(w.grad().is_some());
    assert_eq!(grads.len(), 1);
    // An op whose inputs all lack requires_grad yields a tensor that cannot be backpropagated.
    let z = ops::mul(&x, &x).unwrap();
    assert!(!z.requires_grad());
    assert!(matches!(z.backward_with(&tensor(vec![1.0; 6], &[2, 3])), Err(Error::Autograd(_))));
}

#[test]
fn detach_stops_gradients() {
    let xv = vec![0.5, -1.5, 2.0];
    let x = leaf(xv.clone(), &[3]);
    let d = x.detach();
    assert!(!d.requires_grad() && d.is_leaf());
    assert_eq!(host(&d), xv);
    // y = detach(x) * x: only the second factor carries gradient, so dy/dx = x (not 2x).
    let y = ops::mul(&d, &x).unwrap();
    y.backward_with(&tensor(vec![1.0; 3], &[3])).unwrap();
    assert_eq!(grad_of(&x), xv);
    assert!(d.grad().is_none());
    // Detaching an intermediate cuts everything before it.
    let h = ops::scale(&x, 2.0).unwrap().detach();
    assert!(!ops::relu(&h).unwrap().requires_grad());
}

#[test]
fn backward_seed_rules() {
    let x = leaf(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let y = ops::scale(&x, 2.0).unwrap();
    // Non-scalar without a seed: a clear autograd error.
    match y.backward() {
        Err(Error::Autograd(msg)) => assert!(msg.contains("one-element"), "{msg}"),
        other => panic!("expected Error::Autograd, got {other:?}"),
    }
    // A seed of the wrong shape.
    assert!(matches!(y.backward_with(&tensor(vec![1.0; 4], &[4])), Err(Error::ShapeMismatch { .. })));
    assert!(x.grad().is_none(), "failed backward leaves no gradient");
    // A one-element non-scalar output may use backward().
    let s = ops::linear(&tensor(vec![1.0, 1.0], &[1, 2]), &leaf(vec![3.0, 4.0], &[1, 2]), None).unwrap();
    assert_eq!(s.dims(), &[1, 1]);
    s.backward().unwrap();
}

#[test]
fn set_requires_grad_only_on_leaves() {
    let x = leaf(vec![1.0], &[1]);
    let y = ops::relu(&x).unwrap();
    assert!(matches!(y.set_requires_grad(false), Err(Error::Autograd(_))));
    assert!(y.detach().set_requires_grad(true).is_ok());
}

fn expect_err<T: std::fmt::Debug>(r: cxr::Result<T>, what: &str, ok: impl Fn(&Error) -> bool) {
    match r {
        Err(e) if ok(&e) => {}
        other => panic!("{what}: unexpected result {other:?}"),
    }
}

fn is_shape(e: &Error) -> bool {
    matches!(e, Error::ShapeMismatch { .. })
}
fn is_empty(e: &Error) -> bool {
    matches!(e, Error::EmptyTensor { .. })
}
fn is_invalid(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { .. })
}
fn is_nonfinite(e: &Error) -> bool {
    matches!(e, Error::NonFinite { .. })
}

fn bn(c: usize) -> BatchNormState {
    BatchNormState {
        running_mean: tensor(vec![0.0; c], &[c]),
        running_var: tensor(vec![1.0; c], &[c]),
        momentum: 0.1,
        eps: 1e-5,
    }
}

#[test]
fn shape_mismatches_are_typed_errors() {
    let a = rand_tensor(&[2, 3], 1);
    let b = rand_tensor(&[3, 2], 2);
    expect_err(ops::add(&a, &b), "add", is_shape);
    expect_err(ops::mul(&a, &b), "mul", is_shape);
    expect_err(ops::matmul(&a, &a), "matmul inner", is_shape);
    expect_err(ops::matmul(&rand_tensor(&[2, 3, 1], 3), &b), "matmul rank", is_shape);
    expect_err(ops::linear(&a, &rand_tensor(&[4, 2], 4), None), "linear features", is_shape);
    expect_err(ops::linear(&a, &rand_tensor(&[4, 3], 4), Some(&rand_tensor(&[3], 5))), "linear bias", is_shape);
    expect_err(ops::linear(&rand_tensor(&[3], 5), &b, None), "linear rank", is_shape);
    let x = rand_tensor(&[1, 2, 5, 5], 6);
    expect_err(ops::conv2d(&x, &rand_tensor(&[4, 3, 3, 3], 7), None, 1, 1), "conv2d channels", is_shape);
    expect_err(
        ops::conv2d(&x, &rand_tensor(&[4, 2, 3, 3], 7), Some(&rand_tensor(&[3], 8)), 1, 1),
        "conv2d bias",
        is_shape,
    );
    expect_err(ops::conv2d(&a, &rand_tensor(&[4, 2, 3, 3], 7), None, 1, 1), "conv2d rank", is_shape);
    expect_err(ops::conv2d(&x, &rand_tensor(&[4, 2, 7, 7], 7), None, 1, 0), "conv2d kernel > input", is_invalid);
    expect_err(ops::max_pool2d(&a, 2, 2, 0), "max_pool2d rank", is_shape);
    expect_err(ops::max_pool2d(&x, 3, 2, 2), "max_pool2d pad > k/2", is_invalid);
    expect_err(ops::avg_pool2d(&x, 7, 1, 0), "avg_pool2d kernel > input", is_invalid);
    expect_err(ops::max_pool2d(&x, 2, 0, 0), "max_pool2d stride 0", is_invalid);
    expect_err(ops::global_avg_pool(&a), "global_avg_pool rank", is_shape);
    expect_err(ops::cat_channels(&[&x, &rand_tensor(&[1, 2, 5, 4], 9)]), "cat_channels plane", is_shape);
    expect_err(ops::cat_channels(&[&x, &rand_tensor(&[2, 2, 5, 5], 9)]), "cat_channels batch", is_shape);
    expect_err(ops::cat_channels(&[&x, &a]), "cat_channels rank", is_shape);
    expect_err(ops::cat_channels(&[]), "cat_channels of nothing", is_invalid);
    let t = tensor(vec![0.0; 6], &[2, 3]);
    expect_err(ops::bce_with_logits(&a, &tensor(vec![0.0; 6], &[3, 2]), None), "bce targets", is_shape);
    expect_err(ops::bce_with_logits(&a, &t, Some(&rand_tensor(&[2], 10))), "bce pos_weight", is_shape);
    expect_err(ops::bce_with_logits(&rand_tensor(&[6], 10), &tensor(vec![0.0; 6], &[6]), None), "bce rank", is_shape);
    let (g, be) = (tensor(vec![1.0; 2], &[2]), tensor(vec![0.0; 2], &[2]));
    expect_err(ops::batch_norm(&a, &g, &be, &bn(2), true), "batch_norm channels", is_shape);
    expect_err(ops::batch_norm(&rand_tensor(&[2, 2, 3], 11), &g, &be, &bn(2), true), "batch_norm rank 3", is_shape);
    expect_err(a.reshape([4, 2]), "reshape numel", is_shape);
    expect_err(Tensor::scalar(1.0, cxr::Device::Cpu).unwrap().flatten(), "flatten scalar", is_shape);
    expect_err(Tensor::from_vec(vec![1.0; 5], [2, 3]), "from_vec length", is_shape);
    expect_err(a.to_scalar(), "to_scalar", is_shape);
}

#[test]
fn empty_tensors_are_typed_errors_where_an_op_needs_elements() {
    let empty2 = tensor(vec![], &[0, 3]);
    let empty4 = tensor(vec![], &[0, 2, 4, 4]);
    let empty_plane = tensor(vec![], &[1, 2, 0, 4]);
    expect_err(ops::linear(&empty2, &rand_tensor(&[2, 3], 1), None), "linear", is_empty);
    expect_err(ops::bce_with_logits(&empty2, &tensor(vec![], &[0, 3]), None), "bce", is_empty);
    let (g, b) = (tensor(vec![1.0; 3], &[3]), tensor(vec![0.0; 3], &[3]));
    expect_err(ops::batch_norm(&empty2, &g, &b, &bn(3), true), "batch_norm train", is_empty);
    expect_err(ops::batch_norm(&empty2, &g, &b, &bn(3), false), "batch_norm eval", is_empty);
    expect_err(ops::global_avg_pool(&empty4), "global_avg_pool (no batch)", is_empty);
    expect_err(ops::global_avg_pool(&empty_plane), "global_avg_pool (no pixels)", is_empty);
    expect_err(ops::max_pool2d(&empty4, 2, 2, 0), "max_pool2d", is_empty);
    expect_err(ops::avg_pool2d(&empty4, 2, 2, 0), "avg_pool2d", is_empty);
    expect_err(ops::max_pool2d(&empty_plane, 1, 1, 0), "max_pool2d (no pixels)", is_empty);
    expect_err(ops::conv2d(&empty4, &rand_tensor(&[3, 2, 3, 3], 2), None, 1, 1), "conv2d", |e| {
        is_empty(e) || is_invalid(e)
    });
    // Elementwise ops and matmul accept empty tensors as PyTorch does.
    assert_eq!(ops::relu(&empty2).unwrap().dims(), &[0, 3]);
    assert_eq!(ops::add(&empty2, &empty2).unwrap().numel(), 0);
    assert_eq!(ops::matmul(&empty2, &rand_tensor(&[3, 2], 3)).unwrap().dims(), &[0, 2]);
    let zero_inner = ops::matmul(&tensor(vec![], &[2, 0]), &tensor(vec![], &[0, 3])).unwrap();
    assert_eq!(host(&zero_inner), vec![0.0; 6], "an empty sum is 0");
}

#[test]
fn non_finite_bce_inputs_are_typed_errors() {
    let t = tensor(vec![0.0, 1.0, 1.0, 0.0], &[2, 2]);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let x = leaf(vec![0.5, bad, -0.5, 0.0], &[2, 2]);
        expect_err(ops::bce_with_logits(&x, &t, None), "bce non-finite logits", is_nonfinite);
    }
    let x = leaf(vec![0.5, 0.1, -0.5, 0.0], &[2, 2]);
    let bad_t = tensor(vec![0.0, f32::NAN, 1.0, 0.0], &[2, 2]);
    expect_err(ops::bce_with_logits(&x, &bad_t, None), "bce NaN targets", is_nonfinite);
    // NaN logits produced upstream (0 * inf) are caught at the loss, not propagated silently.
    let inf = tensor(vec![f32::INFINITY, 1.0, 1.0, 1.0], &[2, 2]);
    let z = ops::mul(&ops::scale(&x, 0.0).unwrap(), &inf).unwrap();
    expect_err(ops::bce_with_logits(&z, &t, None), "bce NaN from upstream", is_nonfinite);
}

#[test]
fn batch_norm_training_needs_more_than_one_value_per_channel() {
    let (g, b) = (tensor(vec![1.0; 3], &[3]), tensor(vec![0.0; 3], &[3]));
    let state = bn(3);
    expect_err(ops::batch_norm(&rand_tensor(&[1, 3], 1), &g, &b, &state, true), "bn1d batch 1", is_invalid);
    expect_err(ops::batch_norm(&rand_tensor(&[1, 3, 1, 1], 2), &g, &b, &state, true), "bn2d 1x1x1", is_invalid);
    // The failed calls must not have touched the running statistics.
    assert_eq!(host(&state.running_mean), vec![0.0; 3]);
    assert_eq!(host(&state.running_var), vec![1.0; 3]);
    // One sample with a 2-pixel plane is enough; eval mode works with a single value.
    assert!(ops::batch_norm(&rand_tensor(&[1, 3, 1, 2], 3), &g, &b, &state, true).is_ok());
    assert!(ops::batch_norm(&rand_tensor(&[1, 3], 4), &g, &b, &state, false).is_ok());
}
