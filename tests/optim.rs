//! Optimizers and schedules against torch.optim (fixture from scripts/optim_fixtures.py).

use cxr::nn::{NamedTensor, TensorRole};
use cxr::train::{clip_grad_norm, Decay, LrSchedule, Optimizer, OptimizerConfig, OptimizerKind};
use cxr::{Device, Storage, Tensor};

const N: usize = 7;
const STEPS: usize = 5;

fn param() -> NamedTensor {
    let v = (0..N).map(|i| (0.5 * (0.7 * i as f64 + 0.1).sin()) as f32).collect();
    let t = Tensor::from_vec(v, [N]).unwrap().with_grad().unwrap();
    NamedTensor { name: "w".into(), tensor: t, role: TensorRole::Parameter }
}

fn set_grad(p: &NamedTensor, step: usize) {
    let g: Vec<f32> = (0..N).map(|i| ((0.3 * i as f64 + 1.1 * step as f64).cos() + 0.1 * step as f64) as f32).collect();
    p.tensor.zero_grad();
    // d(sum(w * g))/dw = g: a real backward puts the gradient in place.
    let gt = Tensor::from_vec(g, [N]).unwrap();
    cxr::ops::mul(&p.tensor, &gt).unwrap().backward_with(&Tensor::ones([N], Device::Cpu).unwrap()).unwrap();
}

fn expected(name: &str) -> Vec<f32> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optim.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json[name].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn run(name: &str, config: OptimizerConfig) {
    let p = param();
    let mut opt = Optimizer::new(config.clone(), vec![p.clone()]).unwrap();
    for s in 0..STEPS {
        set_grad(&p, s);
        opt.step(config.lr).unwrap();
    }
    let got = p.tensor.to_vec().unwrap();
    for (i, (g, w)) in got.iter().zip(expected(name)).enumerate() {
        // f32 update arithmetic in a slightly different order than torch: a few ulps.
        assert!((g - w).abs() <= 2e-6 * w.abs().max(1.0), "{name}[{i}]: {g} vs torch {w}");
    }
}

#[test]
fn sgd_matches_torch() {
    let base = OptimizerConfig::new(OptimizerKind::Sgd, 0.1);
    run(
        "sgd_momentum_nesterov_wd",
        OptimizerConfig { momentum: 0.9, nesterov: true, weight_decay: 0.01, ..base.clone() },
    );
    run("sgd_momentum_dampening", OptimizerConfig { lr: 0.05, momentum: 0.8, dampening: 0.3, ..base.clone() });
    run("sgd_plain", OptimizerConfig { lr: 0.2, momentum: 0.0, ..base });
}

#[test]
fn adam_and_adamw_match_torch() {
    run("adam_l2", OptimizerConfig { weight_decay: 0.1, ..OptimizerConfig::new(OptimizerKind::Adam, 0.01) });
    run("adamw", OptimizerConfig { weight_decay: 0.05, ..OptimizerConfig::new(OptimizerKind::AdamW, 0.01) });
}

#[test]
fn state_round_trip_resumes_exactly() {
    let config = OptimizerConfig::new(OptimizerKind::AdamW, 0.01);
    let (a, b) = (param(), param());
    let mut opt_a = Optimizer::new(config.clone(), vec![a.clone()]).unwrap();
    for s in 0..2 {
        set_grad(&a, s);
        opt_a.step(0.01).unwrap();
    }
    // Copy the parameter and optimizer state into a fresh optimizer, then continue both.
    *b.tensor.storage_mut() = Storage::Cpu(a.tensor.to_vec().unwrap());
    let (step, state) = opt_a.state().unwrap();
    assert_eq!(step, 2);
    assert_eq!(state.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["w.exp_avg", "w.exp_avg_sq"]);
    let mut opt_b = Optimizer::new(config, vec![b.clone()]).unwrap();
    opt_b.load_state(step, state.into_iter().collect()).unwrap();
    for s in 2..STEPS {
        set_grad(&a, s);
        opt_a.step(0.01).unwrap();
        set_grad(&b, s);
        opt_b.step(0.01).unwrap();
    }
    assert_eq!(a.tensor.to_vec().unwrap(), b.tensor.to_vec().unwrap());
}

#[test]
fn frozen_parameters_are_not_optimised() {
    let p = param();
    p.tensor.set_requires_grad(false).unwrap();
    let opt = Optimizer::new(OptimizerConfig::new(OptimizerKind::Sgd, 0.1), vec![p]).unwrap();
    assert!(opt.is_empty());
}

#[test]
fn clipping_scales_to_the_max_norm() {
    let p = param();
    set_grad(&p, 0);
    let before: f64 =
        p.tensor.grad().unwrap().to_vec().unwrap().iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
    let norm = clip_grad_norm(std::slice::from_ref(&p), 0.5).unwrap();
    assert!((norm as f64 - before).abs() < 1e-5);
    let after: f64 = p.tensor.grad().unwrap().to_vec().unwrap().iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
    assert!((after - 0.5).abs() < 1e-4, "clipped norm {after}");
}

#[test]
fn warmup_then_cosine() {
    let s = LrSchedule::new(1e-3, 10, Decay::Cosine { total_steps: 110, min_factor: 0.0 });
    assert!((s.lr(0) - 1e-4).abs() < 1e-9);
    assert!((s.lr(9) - 1e-3).abs() < 1e-9);
    assert!((s.lr(60) - 0.5e-3).abs() < 1e-7, "{}", s.lr(60));
    assert!(s.lr(110).abs() < 1e-9);
}

#[test]
fn plateau_reduces_after_patience() {
    let mut s = LrSchedule::new(1.0, 0, Decay::Plateau { factor: 0.1, patience: 1, threshold: 1e-4, min_lr: 0.0 });
    assert!(!s.on_validation(0.7));
    assert!(!s.on_validation(0.7)); // 1 bad validation: within patience
    assert!(s.on_validation(0.69)); // 2 > patience: reduce
    assert!((s.lr(100) - 0.1).abs() < 1e-7);
    assert!(!s.on_validation(0.8)); // improvement resets
}

/// A weight whose gradient stops (a dead ReLU unit) has its optimizer state decay geometrically.
/// Left alone, Adam's first moment reaches the subnormal range after ~800 steps and sticks at the
/// smallest subnormal (0.9 x 1.4e-45 rounds back to it), where every update costs microcode
/// assists; the state must reach exactly zero instead, for Adam's moments and SGD's momentum.
#[test]
fn decayed_optimizer_state_flushes_to_zero_instead_of_sticking_subnormal() {
    let kinds = [
        ("adam", OptimizerConfig::new(OptimizerKind::Adam, 1e-3)),
        ("sgd", OptimizerConfig { momentum: 0.9, ..OptimizerConfig::new(OptimizerKind::Sgd, 1e-3) }),
    ];
    for (name, config) in kinds {
        let p = param();
        let mut opt = Optimizer::new(config.clone(), vec![p.clone()]).unwrap();
        set_grad(&p, 0);
        opt.step(config.lr).unwrap();
        for _ in 0..1200 {
            p.tensor.zero_grad();
            let zero = Tensor::zeros([N], Device::Cpu).unwrap();
            cxr::ops::mul(&p.tensor, &zero).unwrap().backward_with(&Tensor::ones([N], Device::Cpu).unwrap()).unwrap();
            opt.step(config.lr).unwrap();
        }
        let (_, state) = opt.state().unwrap();
        let first_moment =
            &state.iter().find(|(n, _)| n.ends_with("exp_avg") || n.ends_with("momentum_buffer")).unwrap().1;
        assert!(first_moment.iter().all(|v| !v.is_subnormal()), "{name}: subnormal state {first_moment:?}");
        assert!(first_moment.iter().all(|&v| v == 0.0), "{name}: state should have decayed to zero: {first_moment:?}");
    }
}
