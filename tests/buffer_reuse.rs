//! Recycled host buffers hand kernels stale contents (`cpu::buffers::uninit`): every kernel that
//! takes one must overwrite all of it. With poisoning on, each such buffer starts as NaN, so a
//! kernel that reads before it writes turns the models' outputs and gradients into NaN or
//! changes them. One test per binary, because poisoning is process-wide.

use cxr::backend::cpu::buffers;
use cxr::models::Architecture;
use cxr::{ops, Device, Tensor};

/// What one model computes: eval-mode logits (fused inference kernels), the training loss and
/// every parameter's gradient by name.
struct Outputs {
    eval_logits: Vec<f32>,
    loss: f32,
    grads: Vec<(String, Vec<f32>)>,
}

/// [`Outputs`] of a fresh model built from `seed`.
fn run(arch: Architecture, dims: [usize; 4], seed: u64) -> Outputs {
    let model = arch.build(dims[1], 14, seed, Device::Cpu).unwrap();
    let x = Tensor::rand_uniform(dims, -1.0, 1.0, seed + 1, Device::Cpu).unwrap();
    let targets = Tensor::rand_uniform([dims[0], 14], 0.0, 1.0, seed + 2, Device::Cpu).unwrap();
    model.set_training(false);
    let eval_logits = {
        let _g = cxr::no_grad();
        model.forward(&x).unwrap().to_vec().unwrap()
    };
    model.set_training(true);
    let loss = ops::bce_with_logits(&model.forward(&x).unwrap(), &targets, None).unwrap();
    let grads = loss.backward().unwrap();
    let grads = model
        .parameters()
        .iter()
        .map(|p| (p.name.clone(), grads.get(&p.tensor).expect("every parameter gets a gradient").to_vec().unwrap()))
        .collect();
    Outputs { eval_logits, loss: loss.to_scalar().unwrap(), grads }
}

#[test]
fn kernels_overwrite_every_element_of_recycled_buffers() {
    // Shapes large enough that activations and gradients are pooled (>= MIN_POOLED floats).
    let cases = [
        (Architecture::Mlp, [256, 1, 28, 28]),
        (Architecture::ResNet18, [2, 1, 64, 64]),
        (Architecture::ResNet18Small, [2, 1, 48, 48]),
        (Architecture::DenseNet121, [2, 1, 64, 64]),
    ];
    for (arch, dims) in cases {
        let clean = run(arch, dims, 5);
        // The clean run's activations went back to the pool, so the poisoned run reuses them.
        assert!(buffers::pooled_bytes() > 0, "{arch:?}: nothing was pooled; the shapes are too small");
        buffers::set_poison(true);
        let poisoned = run(arch, dims, 5);
        buffers::set_poison(false);
        assert_eq!(clean.eval_logits, poisoned.eval_logits, "{arch:?}: eval logits changed when buffers start as NaN");
        assert!(clean.eval_logits.iter().all(|v| v.is_finite()), "{arch:?}: eval logits not finite");
        assert_eq!(clean.loss.to_bits(), poisoned.loss.to_bits(), "{arch:?}: training loss changed");
        for ((name, g), (_, pg)) in clean.grads.iter().zip(&poisoned.grads) {
            assert!(g.iter().all(|v| v.is_finite()), "{arch:?}: {name} gradient not finite");
            assert_eq!(g, pg, "{arch:?}: gradient of {name} changed when buffers start as NaN");
        }
    }
}
