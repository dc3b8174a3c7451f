//! Grad-CAM latency: ResNet18 (and DenseNet121), batch 1, 224x224, 1 input channel, eval mode.
//!
//! `cargo bench --bench gradcam` prints the median of: the plain forward pass (no grad), Grad-CAM
//! as cxr computes it (backbone without recording, layer4 a fresh leaf, backward through the head
//! only) and, for comparison, Grad-CAM with the whole forward recorded and the backward stopped
//! at layer4 by the same leaf (what a hook-based implementation pays). `RAYON_NUM_THREADS` sets
//! the threads (the figure is for 2). `GRADCAM_BENCH_DENSENET=1` adds DenseNet121.

use cxr::bench::{format_table, measure, Budget};
use cxr::explain::{grad_cam, CamOptions};
use cxr::models::{Architecture, Model};
use cxr::{Device, Tensor};

fn recorded_forward_then_cam(model: &dyn Model, x: &Tensor, layer: &str) {
    // Grad mode on for the whole forward (parameters frozen, so only the input path records).
    let x = x.detach().with_grad().unwrap();
    let mut tapped = None;
    let logits = model
        .forward_tapped(&x, &mut |name, t| {
            if name == layer {
                t.retain_grad();
                tapped = Some(t.clone());
            }
            Ok(t)
        })
        .unwrap();
    let mut seed = vec![0f32; logits.numel()];
    seed[0] = 1.0;
    let g = logits.backward_with(&Tensor::from_vec(seed, logits.shape().clone()).unwrap()).unwrap();
    let _ = g.get(tapped.as_ref().unwrap()).unwrap().to_vec().unwrap();
}

fn bench(arch: Architecture, layer: &str) -> Vec<cxr::bench::Measurement> {
    let model = arch.build(1, 14, 0, Device::Cpu).unwrap();
    model.set_training(false);
    model.set_trainable(&|_| true, false).unwrap();
    let x = Tensor::rand_uniform([1, 1, 224, 224], 0.0, 1.0, 3, Device::Cpu).unwrap();
    let budget = Budget::standard();
    let name = arch.name();
    vec![
        measure(&format!("{name}.forward.b1.224"), None, budget, || {
            let _g = cxr::no_grad();
            model.forward(&x).unwrap();
        }),
        measure(&format!("{name}.gradcam.b1.224"), None, budget, || {
            grad_cam(model.as_ref(), &x, &[(0, 2)], &CamOptions::default()).unwrap();
        }),
        measure(&format!("{name}.gradcam-recorded-forward.b1.224"), None, budget, || {
            recorded_forward_then_cam(model.as_ref(), &x, layer)
        }),
    ]
}

fn main() {
    println!("threads: {}", cxr::num_threads());
    let mut rows = bench(Architecture::ResNet18, "layer4");
    if std::env::var("GRADCAM_BENCH_DENSENET").is_ok_and(|v| v == "1") {
        rows.extend(bench(Architecture::DenseNet121, "features.norm5"));
    }
    println!("{}", format_table(&rows));
}
