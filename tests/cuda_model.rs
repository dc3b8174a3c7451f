//! Model-level check of the CUDA backend: one ResNet18 (small stem, full widths) training step at
//! batch 2 on 32x32 input, run entirely through the CUDA kernels (the real autograd, layers and
//! model code on the device), gives the CPU backend's loss, gradients and updated batch-norm
//! statistics. Without a GPU (`--features cuda-emu`) the kernels run emulated, as fibers; with
//! `--features gpu-tests` on cuda:0.
//!
//! Tolerance: loss within 1e-5 relative; every gradient tensor within 1e-4 relative L2 error
//! (||g_dev - g_cpu|| / ||g_cpu||). The two backends sum in different orders (tiled GEMM vs the
//! CPU's blocked GEMM), and the last stage's batch norms, which see 32 values per channel here,
//! amplify f32 rounding (see the ResNet fixtures' note in tests/golden_models.rs). Measured: worst
//! 6.3e-6 (layer4.1.bn1.weight), so 1e-4 leaves ~15x; a wrong index or a missing term gives O(1).
#![cfg(any(feature = "cuda-emu", feature = "gpu-tests"))]

mod cuda_common;

use cxr::models::resnet::{ResNet, ResNetConfig};
use cxr::models::Model;
use cxr::nn::{Module, TensorRole};
use cxr::{ops, Device, Tensor};

fn rel_l2(want: &[f32], got: &[f32]) -> f64 {
    let num: f64 = want.iter().zip(got).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// A tensor after the step: name, role, values, gradient.
type Snapshot = (String, TensorRole, Vec<f32>, Option<Vec<f32>>);

struct Step {
    loss: f32,
    tensors: Vec<Snapshot>,
}

fn train_step(device: Device) -> Step {
    let model = ResNet::new(ResNetConfig::resnet18(1, 14).small_stem(), 0, device).unwrap();
    model.set_training(true);
    let x = Tensor::rand_uniform([2, 1, 32, 32], -1.0, 1.0, 11, Device::Cpu).unwrap().to_device(device).unwrap();
    let targets: Vec<f32> = (0..28).map(|i| ((i * 7) % 3 == 0) as u8 as f32).collect();
    let t = Tensor::from_vec(targets, [2, 14]).unwrap().to_device(device).unwrap();
    let pos =
        Tensor::from_vec((0..14).map(|i| 1.0 + i as f32 * 0.25).collect(), [14]).unwrap().to_device(device).unwrap();
    let logits = model.forward(&x).unwrap();
    let loss = ops::bce_with_logits(&logits, &t, Some(&pos)).unwrap();
    loss.backward().unwrap();
    let tensors = model
        .named_tensors()
        .into_iter()
        .map(|n| {
            let grad = n.tensor.grad().map(|g| g.to_vec().unwrap());
            (n.name, n.role, n.tensor.to_vec().unwrap(), grad)
        })
        .collect();
    Step { loss: loss.to_scalar().unwrap(), tensors }
}

#[test]
fn resnet18_small_training_step_matches_the_cpu_backend() {
    #[cfg(feature = "cuda-emu")]
    cxr::backend::cuda::emu::use_fibers(true);
    let cpu = train_step(Device::Cpu);
    let emu = train_step(cuda_common::device_under_test());
    assert!((cpu.loss - emu.loss).abs() <= 1e-5 * cpu.loss.abs(), "loss: cpu {} vs cuda {}", cpu.loss, emu.loss);
    assert_eq!(cpu.tensors.len(), emu.tensors.len());
    let mut grads = 0;
    let mut worst = (0.0f64, String::new());
    for ((name, role, cv, cg), (ename, _, ev, eg)) in cpu.tensors.iter().zip(&emu.tensors) {
        assert_eq!(name, ename);
        // Parameters are untouched by a step without an optimizer; running statistics moved.
        let value_err = rel_l2(cv, ev);
        assert!(value_err <= 1e-5, "{name} ({role:?}) value differs: {value_err:.2e}");
        match (cg, eg) {
            (Some(cg), Some(eg)) => {
                let err = rel_l2(cg, eg);
                assert!(err <= 1e-4, "grad of {name}: relative L2 error {err:.2e}");
                if err > worst.0 {
                    worst = (err, name.clone());
                }
                grads += 1;
            }
            (None, None) => {}
            _ => panic!("{name}: gradient on one backend only"),
        }
    }
    assert_eq!(grads, cpu.tensors.iter().filter(|t| t.1 == TensorRole::Parameter).count());
    eprintln!(
        "loss {} (cpu) vs {} (cuda); {grads} gradients, worst {:.2e} at {}",
        cpu.loss, emu.loss, worst.0, worst.1
    );
}
