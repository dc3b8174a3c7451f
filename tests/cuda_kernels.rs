//! Every CUDA kernel, property-tested against the CPU backend over random shapes, including sizes
//! that are not multiples of the GEMM tile (64) or the block (256), through the same launch
//! configurations and wrappers as every caller. Tolerances are per kernel family and stated in
//! `cuda_common::tol`; exact ones are bitwise.
//!
//! Without a GPU: `cargo test --features cuda-emu --test cuda_kernels` runs the kernels in CPU
//! emulation (kernels/cuda_emu.h). Each emulated CUDA thread is an OS thread here, so the
//! sanitizers (scripts/cuda_sanitize.sh) see real concurrency, which is why shapes stay small.
//! On a GPU: `cargo test --features gpu-tests --test cuda_kernels` runs them on cuda:0.
#![cfg(any(feature = "cuda-emu", feature = "gpu-tests"))]

mod cuda_common;
use cuda_common::*;
use cxr::backend::{AdamStep, BceWeights, Conv2dGeometry, Layout, NormShape, Pool2dGeometry, SgdStep};
use proptest::prelude::*;

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cfg(6))]

    #[test]
    fn elementwise_ops_match(n in 1usize..700, seed in any::<u64>()) {
        let pair = Pair::new();
        let a = data(n, seed, 3.0);
        let b = data(n, seed ^ 1, 3.0);
        let (ca, ga) = pair.up(&a);
        let (cb, gb) = pair.up(&b);
        let (c, g) = (pair.cpu, pair.gpu);
        check("add", &c.add(&ca, &cb).unwrap(), &g.add(&ga, &gb).unwrap(), tol::EXACT);
        check("mul", &c.mul(&ca, &cb).unwrap(), &g.mul(&ga, &gb).unwrap(), tol::EXACT);
        check("scale", &c.scale(&ca, 0.37).unwrap(), &g.scale(&ga, 0.37).unwrap(), tol::EXACT);
        check("relu", &c.relu(&ca).unwrap(), &g.relu(&ga).unwrap(), tol::EXACT);
        check("relu_backward", &c.relu_backward(&ca, &cb).unwrap(), &g.relu_backward(&ga, &gb).unwrap(), tol::EXACT);
        check("sigmoid", &c.sigmoid(&ca).unwrap(), &g.sigmoid(&ga).unwrap(), tol::TRANSCENDENTAL);
        check("sigmoid_backward", &c.sigmoid_backward(&ca, &cb).unwrap(), &g.sigmoid_backward(&ga, &gb).unwrap(), tol::EXACT);
        check("full", &c.full(n, 1.5).unwrap(), &g.full(n, 1.5).unwrap(), tol::EXACT);
        let (mut cd, mut gd) = pair.up(&a);
        c.add_assign(&mut cd, &cb).unwrap();
        g.add_assign(&mut gd, &gb).unwrap();
        check("add_assign", &cd, &gd, tol::EXACT);
        check("inv_std", &c.inv_std(&c.mul(&ca, &ca).unwrap(), 1e-5).unwrap(), &g.inv_std(&g.mul(&ga, &ga).unwrap(), 1e-5).unwrap(), tol::EXACT);
    }

    #[test]
    fn copy_on_write_keeps_clones_apart(n in 1usize..300, seed in any::<u64>()) {
        let pair = Pair::new();
        let (_, ga) = pair.up(&data(n, seed, 1.0));
        let (_, gb) = pair.up(&data(n, seed ^ 3, 1.0));
        let before = pair.gpu.copy_to_host(&ga).unwrap();
        let mut alias = ga.clone();
        pair.gpu.add_assign(&mut alias, &gb).unwrap();
        prop_assert_eq!(pair.gpu.copy_to_host(&ga).unwrap(), before);
    }

    #[test]
    fn dropout_masks_are_bit_identical(n in 1usize..2000, p in 0.0f32..0.95, seed in any::<u64>()) {
        let pair = Pair::new();
        check("dropout_mask", &pair.cpu.dropout_mask(n, p, seed).unwrap(), &pair.gpu.dropout_mask(n, p, seed).unwrap(), tol::EXACT);
    }

    #[test]
    fn reductions_match(n in 1usize..3000, seed in any::<u64>()) {
        let pair = Pair::new();
        let mut a = data(n, seed, 2.0);
        let (ca, ga) = pair.up(&a);
        let scale: f32 = a.iter().map(|v| v.abs()).sum();
        let (cs, gs) = (pair.cpu.sum_all(&ca).unwrap(), pair.gpu.sum_all(&ga).unwrap());
        prop_assert!((cs - gs).abs() <= tol::REDUCTION.bound(scale), "sum_all {} vs {}", cs, gs);
        let (cq, gq) = (pair.cpu.sum_squares(&ca).unwrap(), pair.gpu.sum_squares(&ga).unwrap());
        prop_assert!((cq - gq).abs() <= 1e-12 * cq.max(1.0), "sum_squares {} vs {}", cq, gq);
        prop_assert!(pair.gpu.all_finite(&ga).unwrap());
        a[n / 2] = f32::NAN;
        prop_assert!(!pair.gpu.all_finite(&pair.up(&a).1).unwrap());
    }

    #[test]
    fn channel_sums_match(batch in 1usize..4, channels in 1usize..9, plane in 1usize..70, seed in any::<u64>()) {
        let pair = Pair::new();
        let (cx, gx) = pair.up(&data(batch * channels * plane, seed, 1.0));
        let bound = tol::REDUCTION.bound((batch * plane) as f32);
        check("channel_sum", &pair.cpu.channel_sum(&cx, batch, channels, plane).unwrap(), &pair.gpu.channel_sum(&gx, batch, channels, plane).unwrap(), Tol::abs(bound));
        check("sum_rows", &pair.cpu.sum_rows(&cx, batch * plane, channels).unwrap(), &pair.gpu.sum_rows(&gx, batch * plane, channels).unwrap(), Tol::abs(bound));
    }

    #[test]
    fn matmul_matches_in_every_layout(m in 1usize..80, k in 1usize..40, n in 1usize..80, ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>()) {
        let pair = Pair::new();
        let layout = |t: bool| if t { Layout::Transposed } else { Layout::Normal };
        let (ca, ga) = pair.up(&data(m * k, seed, 1.0));
        let (cb, gb) = pair.up(&data(k * n, seed ^ 7, 1.0));
        let want = pair.cpu.matmul(&ca, layout(ta), &cb, layout(tb), m, k, n).unwrap();
        let got = pair.gpu.matmul(&ga, layout(ta), &gb, layout(tb), m, k, n).unwrap();
        check("matmul", &want, &got, tol::gemm(k));
    }

    #[test]
    fn transpose_and_row_bias_match(rows in 1usize..70, cols in 1usize..70, seed in any::<u64>()) {
        let pair = Pair::new();
        let (cx, gx) = pair.up(&data(rows * cols, seed, 1.0));
        check("transpose2d", &pair.cpu.transpose2d(&cx, rows, cols).unwrap(), &pair.gpu.transpose2d(&gx, rows, cols).unwrap(), tol::EXACT);
        let (cb, gb) = pair.up(&data(cols, seed ^ 5, 1.0));
        let (mut cy, mut gy) = (cx.clone(), gx.clone());
        pair.cpu.add_row_bias_assign(&mut cy, &cb, rows, cols).unwrap();
        pair.gpu.add_row_bias_assign(&mut gy, &gb, rows, cols).unwrap();
        check("add_row_bias", &cy, &gy, tol::EXACT);
        check("add_row_bias leaves the source", &cx, &gx, tol::EXACT);
    }
}

fn conv_geometry() -> impl Strategy<Value = Conv2dGeometry> {
    (
        1usize..3,
        1usize..5,
        1usize..6,
        3usize..10,
        3usize..10,
        prop::sample::select(vec![1usize, 3]),
        1usize..3,
        0usize..2,
    )
        .prop_map(|(batch, cin, cout, h, w, k, s, p)| Conv2dGeometry {
            batch,
            in_channels: cin,
            out_channels: cout,
            in_h: h,
            in_w: w,
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: p.min(k / 2),
            pad_w: p.min(k / 2),
        })
}

fn pool_geometry() -> impl Strategy<Value = Pool2dGeometry> {
    (1usize..3, 1usize..4, 3usize..11, 3usize..11, 1usize..4, 1usize..3, 0usize..2).prop_map(
        |(batch, channels, h, w, k, s, p)| Pool2dGeometry {
            batch,
            channels,
            in_h: h,
            in_w: w,
            kernel: k,
            stride: s,
            pad: p.min(k / 2),
        },
    )
}

proptest! {
    #![proptest_config(cfg(6))]

    #[test]
    fn conv2d_forward_and_backward_match(g in conv_geometry(), bias in any::<bool>(), seed in any::<u64>()) {
        let pair = Pair::new();
        let (cx, gx) = pair.up(&data(g.input_len(), seed, 1.0));
        let (cw, gw) = pair.up(&data(g.weight_len(), seed ^ 1, 1.0));
        let (cb, gb) = pair.up(&data(g.out_channels, seed ^ 2, 1.0));
        let (cdy, gdy) = pair.up(&data(g.output_len(), seed ^ 3, 1.0));
        let (cbias, gbias) = if bias { (Some(&cb), Some(&gb)) } else { (None, None) };
        let k_fwd = g.in_channels * g.kernel_h * g.kernel_w;
        check("conv2d_forward", &pair.cpu.conv2d_forward(&g, &cx, &cw, cbias).unwrap(), &pair.gpu.conv2d_forward(&g, &gx, &gw, gbias).unwrap(), tol::gemm(k_fwd + 1));
        let k_data = g.out_channels * g.kernel_h * g.kernel_w;
        check("conv2d_backward_input", &pair.cpu.conv2d_backward_input(&g, &cdy, &cw).unwrap(), &pair.gpu.conv2d_backward_input(&g, &gdy, &gw).unwrap(), tol::gemm(k_data));
        let k_weight = g.batch * g.out_h() * g.out_w();
        check("conv2d_backward_weight", &pair.cpu.conv2d_backward_weight(&g, &cx, &cdy).unwrap(), &pair.gpu.conv2d_backward_weight(&g, &gx, &gdy).unwrap(), tol::gemm(k_weight));
    }

    #[test]
    fn pools_match(g in pool_geometry(), seed in any::<u64>()) {
        let pair = Pair::new();
        // Few distinct values, so windows hold ties and the first-maximum rule is exercised.
        let x: Vec<f32> = data(g.input_len(), seed, 3.0).iter().map(|v| v.round()).collect();
        let (cx, gx) = pair.up(&x);
        let (cdy, gdy) = pair.up(&data(g.output_len(), seed ^ 1, 1.0));
        check("max_pool2d", &pair.cpu.max_pool2d_forward(&g, &cx).unwrap(), &pair.gpu.max_pool2d_forward(&g, &gx).unwrap(), tol::EXACT);
        check("max_pool2d_backward", &pair.cpu.max_pool2d_backward(&g, &cx, &cdy).unwrap(), &pair.gpu.max_pool2d_backward(&g, &gx, &gdy).unwrap(), tol::SMALL_SUM);
        check("avg_pool2d", &pair.cpu.avg_pool2d_forward(&g, &cx).unwrap(), &pair.gpu.avg_pool2d_forward(&g, &gx).unwrap(), tol::SMALL_SUM);
        check("avg_pool2d_backward", &pair.cpu.avg_pool2d_backward(&g, &cdy).unwrap(), &pair.gpu.avg_pool2d_backward(&g, &gdy).unwrap(), tol::SMALL_SUM);
        let (rows, plane) = (g.batch * g.channels, g.in_h * g.in_w);
        check("global_avg_pool", &pair.cpu.global_avg_pool_forward(&cx, rows, plane).unwrap(), &pair.gpu.global_avg_pool_forward(&gx, rows, plane).unwrap(), tol::SMALL_SUM);
        let (cdr, gdr) = pair.up(&data(rows, seed ^ 2, 1.0));
        check("global_avg_pool_backward", &pair.cpu.global_avg_pool_backward(&cdr, rows, plane).unwrap(), &pair.gpu.global_avg_pool_backward(&gdr, rows, plane).unwrap(), tol::EXACT);
    }

    #[test]
    fn batch_norm_matches(batch in 1usize..4, channels in 1usize..6, plane in 1usize..40, seed in any::<u64>()) {
        let pair = Pair::new();
        prop_assume!(batch * plane > 1);
        let s = NormShape { batch, channels, plane };
        let x: Vec<f32> = data(s.len(), seed, 2.0).iter().map(|v| v + 0.5).collect();
        let (cx, gx) = pair.up(&x);
        let (cg, gg) = pair.up(&data(channels, seed ^ 1, 1.0));
        let (cb, gb) = pair.up(&data(channels, seed ^ 2, 1.0));
        let (mut crm, mut grm) = pair.up(&data(channels, seed ^ 3, 1.0));
        let (mut crv, mut grv) = pair.up(&data(channels, seed ^ 4, 1.0).iter().map(|v| v.abs() + 0.5).collect::<Vec<_>>());
        let cs = pair.cpu.batch_norm_train(s, &cx, &cg, &cb, &mut crm, &mut crv, 0.1, 1e-5).unwrap();
        let gs = pair.gpu.batch_norm_train(s, &gx, &gg, &gb, &mut grm, &mut grv, 0.1, 1e-5).unwrap();
        check("batch_norm_train output", &cs.output, &gs.output, tol::NORM);
        check("batch_norm_train mean", &cs.mean, &gs.mean, tol::NORM);
        check("batch_norm_train inv_std", &cs.inv_std, &gs.inv_std, tol::NORM);
        check("running_mean", &crm, &grm, tol::NORM);
        check("running_var", &crv, &grv, tol::NORM);
        let ce = pair.cpu.batch_norm_eval(s, &cx, &cg, &cb, &crm, &crv, 1e-5).unwrap();
        let ge = pair.gpu.batch_norm_eval(s, &gx, &gg, &gb, &grm, &grv, 1e-5).unwrap();
        check("batch_norm_eval", &ce, &ge, tol::NORM);
        let (cdy, gdy) = pair.up(&data(s.len(), seed ^ 5, 1.0));
        for batch_stats in [true, false] {
            let c = pair.cpu.batch_norm_backward(s, &cx, &cdy, &cg, &cs.mean, &cs.inv_std, batch_stats).unwrap();
            let g = pair.gpu.batch_norm_backward(s, &gx, &gdy, &gg, &cs_on(&pair, &cs.mean), &cs_on(&pair, &cs.inv_std), batch_stats).unwrap();
            check("batch_norm_backward input", &c.input, &g.input, tol::NORM);
            check("batch_norm_backward gamma", &c.gamma, &g.gamma, tol::NORM);
            check("batch_norm_backward beta", &c.beta, &g.beta, tol::NORM);
        }
    }

    #[test]
    fn concat_and_split_match(batch in 1usize..3, parts in prop::collection::vec(1usize..5, 1..4), plane in 1usize..30, seed in any::<u64>()) {
        let pair = Pair::new();
        let ups: Vec<_> = parts.iter().enumerate().map(|(i, &c)| pair.up(&data(batch * c * plane, seed ^ i as u64, 1.0))).collect();
        let cparts: Vec<_> = ups.iter().zip(&parts).map(|(u, &c)| (&u.0, c)).collect();
        let gparts: Vec<_> = ups.iter().zip(&parts).map(|(u, &c)| (&u.1, c)).collect();
        let (cy, gy) = (pair.cpu.concat_channels(&cparts, batch, plane).unwrap(), pair.gpu.concat_channels(&gparts, batch, plane).unwrap());
        check("concat_channels", &cy, &gy, tol::EXACT);
        let cs = pair.cpu.split_channels(&cy, &parts, batch, plane).unwrap();
        let gs = pair.gpu.split_channels(&gy, &parts, batch, plane).unwrap();
        for (c, g) in cs.iter().zip(&gs) {
            check("split_channels", c, g, tol::EXACT);
        }
    }

    #[test]
    fn bce_with_logits_matches(rows in 1usize..6, classes in 1usize..15, weighted in any::<bool>(), seed in any::<u64>()) {
        let pair = Pair::new();
        let n = rows * classes;
        let (cx, gx) = pair.up(&data(n, seed, 30.0));
        let t: Vec<f32> = data(n, seed ^ 1, 1.0).iter().map(|v| (*v > 0.0) as u8 as f32).collect();
        let (ct, gt) = pair.up(&t);
        let (cp, gp) = pair.up(&data(classes, seed ^ 2, 1.0).iter().map(|v| v.abs() * 5.0).collect::<Vec<_>>());
        let (cw, gw) = pair.up(&data(classes, seed ^ 3, 1.0).iter().map(|v| v.abs() + 0.1).collect::<Vec<_>>());
        let (cwts, gwts) = if weighted {
            (BceWeights { pos_weight: Some(&cp), class_weight: Some(&cw) }, BceWeights { pos_weight: Some(&gp), class_weight: Some(&gw) })
        } else {
            (BceWeights::default(), BceWeights::default())
        };
        let (cl, gl) = (pair.cpu.bce_with_logits(&cx, &ct, cwts, rows, classes).unwrap(), pair.gpu.bce_with_logits(&gx, &gt, gwts, rows, classes).unwrap());
        prop_assert!((cl - gl).abs() <= tol::TRANSCENDENTAL.bound(cl.abs()), "bce {} vs {}", cl, gl);
        let cd = pair.cpu.bce_with_logits_backward(&cx, &ct, cwts, rows, classes, 0.7).unwrap();
        let gd = pair.gpu.bce_with_logits_backward(&gx, &gt, gwts, rows, classes, 0.7).unwrap();
        check("bce_with_logits_backward", &cd, &gd, tol::TRANSCENDENTAL);
    }

    #[test]
    fn optimizer_steps_match(n in 1usize..600, momentum in prop::sample::select(vec![0.0f32, 0.9]), nesterov in any::<bool>(), decoupled in any::<bool>(), seed in any::<u64>()) {
        let pair = Pair::new();
        let (mut cp, mut gp) = pair.up(&data(n, seed, 1.0));
        let sgd = SgdStep { lr: 0.1, momentum, dampening: 0.0, weight_decay: 1e-2, nesterov: nesterov && momentum > 0.0 };
        let adam = AdamStep { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2, decoupled, step: 1 };
        let (mut cbuf, mut gbuf) = (pair.cpu.full(0, 0.0).unwrap(), pair.gpu.full(0, 0.0).unwrap());
        let (mut cm, mut gm) = (pair.cpu.full(0, 0.0).unwrap(), pair.gpu.full(0, 0.0).unwrap());
        let (mut cv, mut gv) = (pair.cpu.full(0, 0.0).unwrap(), pair.gpu.full(0, 0.0).unwrap());
        for step in 1..4u64 {
            let (cg, gg) = pair.up(&data(n, seed ^ step, 1.0));
            pair.cpu.sgd_step(&mut cp, &cg, &mut cbuf, &sgd).unwrap();
            pair.gpu.sgd_step(&mut gp, &gg, &mut gbuf, &sgd).unwrap();
            check("sgd_step", &cp, &gp, tol::OPTIM);
            let adam = AdamStep { step, ..adam };
            pair.cpu.adam_step(&mut cp, &cg, &mut cm, &mut cv, &adam).unwrap();
            pair.gpu.adam_step(&mut gp, &gg, &mut gm, &mut gv, &adam).unwrap();
            check("adam_step", &cp, &gp, tol::OPTIM);
            check("adam m", &cm, &gm, tol::OPTIM);
            check("adam v", &cv, &gv, tol::OPTIM);
        }
    }

    #[test]
    fn gradcam_weighting_matches_the_definition(batch in 1usize..3, channels in 1usize..8, plane in 1usize..50, seed in any::<u64>()) {
        let (act, grad) = (data(batch * channels * plane, seed, 1.0), data(batch * channels * plane, seed ^ 1, 1.0));
        let want = gradcam_reference(&act, &grad, batch, channels, plane);
        let got = device_gradcam(&act, &grad, batch, channels, plane);
        assert_close("gradcam", &want, &got, tol::SMALL_SUM);
    }
}

/// Uploads a CPU storage's values to the emulated device.
fn cs_on(pair: &Pair, s: &cxr::backend::Storage) -> cxr::backend::Storage {
    pair.gpu.copy_from_host(pair.cpu.copy_to_host(s).unwrap()).unwrap()
}

/// Grad-CAM by its definition, in f64.
fn gradcam_reference(act: &[f32], grad: &[f32], batch: usize, channels: usize, plane: usize) -> Vec<f32> {
    let mut cam = vec![0.0; batch * plane];
    for b in 0..batch {
        for p in 0..plane {
            let mut acc = 0.0f64;
            for c in 0..channels {
                let base = (b * channels + c) * plane;
                let w = grad[base..base + plane].iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
                acc += w * act[base + p] as f64;
            }
            cam[b * plane + p] = acc.max(0.0) as f32;
        }
    }
    cam
}

#[test]
fn bad_sizes_and_foreign_storage_are_errors_naming_the_op() {
    let pair = Pair::new();
    let (cx, gx) = pair.up(&[1.0, 2.0, 3.0]);
    let e = pair.gpu.relu(&cx).unwrap_err().to_string();
    assert!(e.contains("relu") && e.contains("cpu"), "{e}");
    let (_, gy) = pair.up(&[1.0, 2.0]);
    let e = pair.gpu.add(&gx, &gy).unwrap_err().to_string();
    assert!(e.contains("add") && e.contains("3 vs 2"), "{e}");
    let e = pair.gpu.matmul(&gx, Layout::Normal, &gy, Layout::Normal, 1 << 22, 1 << 10, 1).unwrap_err().to_string();
    assert!(e.contains("matmul"), "{e}");
    let g = Pool2dGeometry { batch: 1, channels: 1, in_h: 1, in_w: 3, kernel: 3, stride: 1, pad: 0 };
    let e = pair.gpu.max_pool2d_forward(&g, &gx).unwrap_err().to_string();
    assert!(e.contains("max_pool2d") && e.contains("geometry"), "{e}");
}
