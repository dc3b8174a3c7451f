//! Model architecture checks: torchvision's exact state_dict names, order and shapes (hashed
//! against torchvision 0.29's), parameter counts, forward shapes and a training step.

use cxr::models::{DenseNet, DenseNetConfig, Mlp, MlpConfig, Model, ResNet, ResNetConfig};
use cxr::nn::Module;
use cxr::{ops, Device, Tensor};

/// sha256 of "name:(d0, d1, ...)" joined by ';' over the state_dict without num_batches_tracked,
/// computed in Python by torchvision.models.<arch>(num_classes=14).
fn signature(model: &dyn Module) -> String {
    model
        .named_tensors()
        .iter()
        .map(|t| {
            let dims: Vec<String> = t.tensor.dims().iter().map(|d| d.to_string()).collect();
            let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
            format!("{}:{}", t.name, tuple)
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn sha256_hex(s: &str) -> String {
    sha256::digest(s.as_bytes())
}

/// A small self-contained SHA-256 so the test needs no extra crate.
mod sha256 {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    pub fn digest(data: &[u8]) -> String {
        let mut h: [u32; 8] =
            [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
        let mut msg = data.to_vec();
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
        for chunk in msg.chunks(64) {
            let mut w = [0u32; 64];
            for i in 0..16 {
                w[i] = u32::from_be_bytes([chunk[4 * i], chunk[4 * i + 1], chunk[4 * i + 2], chunk[4 * i + 3]]);
            }
            for i in 16..64 {
                let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
                let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
            }
            let mut v = h;
            for i in 0..64 {
                let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
                let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
                let t1 = v[7].wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
                let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
                let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
                let t2 = s0.wrapping_add(maj);
                v = [t1.wrapping_add(t2), v[0], v[1], v[2], v[3].wrapping_add(t1), v[4], v[5], v[6]];
            }
            for (h, v) in h.iter_mut().zip(v) {
                *h = h.wrapping_add(v);
            }
        }
        h.iter().map(|x| format!("{x:08x}")).collect()
    }

    #[test]
    fn known_answer() {
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

#[test]
fn resnet18_matches_torchvision_state_dict() {
    let m = ResNet::new(ResNetConfig::resnet18(3, 14), 0, Device::Cpu).unwrap();
    assert_eq!(m.named_tensors().len(), 102);
    assert_eq!(m.parameter_count(), 11_183_694);
    assert_eq!(sha256_hex(&signature(&m)), "da732013718053253f70279be7702cba66f640c51e3e145ba91debc225f4ed29");
}

#[test]
fn resnet34_and_50_match_torchvision_sizes() {
    let r34 = ResNet::new(ResNetConfig::resnet34(3, 1000), 0, Device::Cpu).unwrap();
    assert_eq!(r34.named_tensors().len(), 182);
    assert_eq!(r34.parameter_count(), 21_797_672);
    let r50 = ResNet::new(ResNetConfig::resnet50(3, 14), 0, Device::Cpu).unwrap();
    assert_eq!(r50.named_tensors().len(), 267);
    assert_eq!(r50.parameter_count(), 23_536_718);
    assert_eq!(sha256_hex(&signature(&r50)), "f8e12c01268fc43490132efa6208885b57bee265f8cfc0801234498bf376fa83");
}

#[test]
fn densenet121_matches_torchvision_state_dict() {
    let m = DenseNet::new(DenseNetConfig::densenet121(3, 14), 0, Device::Cpu).unwrap();
    assert_eq!(m.named_tensors().len(), 606);
    assert_eq!(m.parameter_count(), 6_968_206);
    assert_eq!(sha256_hex(&signature(&m)), "ca6a0ac7cccec8223e75ec82f8569a07377b0711bc41b7f6a12b99b1f17bef01");
    let d1000 = DenseNet::new(DenseNetConfig::densenet121(3, 1000), 0, Device::Cpu).unwrap();
    assert_eq!(d1000.parameter_count(), 7_978_856);
}

#[test]
fn mlp_variants_have_the_lab_shapes() {
    let m = Mlp::new(MlpConfig::chestmnist(), 0, Device::Cpu).unwrap();
    // 784*512+512 + 512*256+256 + 256*128+128 + 128*64+64 + 64*14+14, plus 3 BN (gamma, beta).
    let linear = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 64 + 64 + 64 * 14 + 14;
    assert_eq!(m.parameter_count(), linear + 2 * (512 + 256 + 128));
    let names: Vec<String> = m.named_tensors().into_iter().map(|t| t.name).collect();
    assert!(names.contains(&"bn3.running_var".to_string()) && !names.iter().any(|n| n.starts_with("bn4")));
    let wide = Mlp::new(MlpConfig::wider(), 0, Device::Cpu).unwrap();
    assert_eq!(wide.parameter_count(), 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 14 + 14);
    let deep = Mlp::new(MlpConfig::deeper(), 0, Device::Cpu).unwrap();
    assert_eq!(deep.config().hidden.iter().map(|h| h.units).collect::<Vec<_>>(), [1024, 512, 256, 128]);
}

fn train_step(model: &dyn Model, x: &Tensor) -> f32 {
    model.set_training(true);
    let logits = model.forward(x).unwrap();
    assert_eq!(logits.dims(), [x.dims()[0], model.num_classes()]);
    let targets = Tensor::full(logits.dims(), 1.0, Device::Cpu).unwrap();
    let loss = ops::bce_with_logits(&logits, &targets, None).unwrap();
    loss.backward().unwrap();
    for p in model.parameters() {
        let g = p.tensor.grad().unwrap_or_else(|| panic!("{} has no gradient", p.name));
        assert!(g.to_vec().unwrap().iter().all(|v| v.is_finite()), "{} gradient not finite", p.name);
    }
    loss.to_scalar().unwrap()
}

#[test]
fn small_stem_resnet18_trains_on_28x28() {
    let m = ResNet::new(ResNetConfig::resnet18(1, 14).small_stem(), 3, Device::Cpu).unwrap();
    let x = Tensor::rand_uniform([2, 1, 28, 28], 0.0, 1.0, 1, Device::Cpu).unwrap();
    assert!(train_step(&m, &x).is_finite());
    m.set_training(false);
    let _g = cxr::no_grad();
    let y = m.forward(&x).unwrap();
    assert_eq!(y.dims(), [2, 14]);
}

#[test]
fn resnet50_and_densenet121_forward_backward_at_64px() {
    let x = Tensor::rand_uniform([2, 3, 64, 64], 0.0, 1.0, 1, Device::Cpu).unwrap();
    let r50 = ResNet::new(ResNetConfig::resnet50(3, 14), 4, Device::Cpu).unwrap();
    assert!(train_step(&r50, &x).is_finite());
    let d = DenseNet::new(DenseNetConfig::densenet121(3, 14), 5, Device::Cpu).unwrap();
    assert!(train_step(&d, &x).is_finite());
}

#[test]
fn taps_see_every_tap_point_in_order() {
    let m = ResNet::new(ResNetConfig::resnet18(1, 14), 3, Device::Cpu).unwrap();
    let x = Tensor::rand_uniform([1, 1, 64, 64], 0.0, 1.0, 1, Device::Cpu).unwrap();
    let mut seen = Vec::new();
    m.forward_tapped(&x, &mut |name, t| {
        seen.push((name.to_string(), t.dims().to_vec()));
        Ok(t)
    })
    .unwrap();
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, m.tap_points());
    assert_eq!(seen[4].1, [1, 512, 2, 2]);
}

#[test]
fn wrong_input_channels_is_a_typed_error() {
    let m = ResNet::new(ResNetConfig::resnet18(1, 14), 3, Device::Cpu).unwrap();
    let x = Tensor::zeros([1, 3, 32, 32], Device::Cpu).unwrap();
    assert!(matches!(m.forward(&x), Err(cxr::Error::ShapeMismatch { .. })));
}

/// Trains a few steps so running statistics are not the identity, then compares eval outputs.
fn fold_check<M: Model + ?Sized>(model: &mut M, fold: impl Fn(&mut M), x: &Tensor) {
    for _ in 0..2 {
        model.set_training(true);
        let _ = model.forward(x).unwrap();
    }
    model.set_training(false);
    let _g = cxr::no_grad();
    let before = model.forward(x).unwrap().to_vec().unwrap();
    let tensors_before = model.named_tensors().len();
    fold(model);
    assert!(model.named_tensors().len() < tensors_before, "batch norms were removed");
    let after = model.forward(x).unwrap().to_vec().unwrap();
    let scale = before.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (a, b) in before.iter().zip(&after) {
        // Float rounding only: folding reorders a handful of multiplications per element.
        assert!((a - b).abs() <= 1e-5 * scale.max(1.0), "{a} vs {b}");
    }
}

#[test]
fn batch_norm_folding_changes_outputs_only_by_rounding() {
    let x = Tensor::rand_uniform([2, 3, 64, 64], 0.0, 1.0, 1, Device::Cpu).unwrap();
    let mut r = ResNet::new(ResNetConfig::resnet18(3, 14), 4, Device::Cpu).unwrap();
    fold_check(&mut r, |m| m.fold_batch_norm().unwrap(), &x);
    assert!(r.is_folded());
    assert!(r.named_tensors().iter().any(|t| t.name == "layer2.0.downsample.0.bias"));
    let mut d = DenseNet::new(DenseNetConfig::densenet121(3, 14), 5, Device::Cpu).unwrap();
    fold_check(&mut d, |m| m.fold_batch_norm().unwrap(), &x);
    // Batch 1 takes the path where bias, residual and ReLU ride inside the GEMM's store; folding
    // through the `Model` trait (as `Classifier` does) reaches the same code.
    let x1 = Tensor::rand_uniform([1, 3, 64, 64], 0.0, 1.0, 2, Device::Cpu).unwrap();
    let mut r1: Box<dyn Model> = Box::new(ResNet::new(ResNetConfig::resnet18(3, 14), 6, Device::Cpu).unwrap());
    fold_check(r1.as_mut(), |m| m.fold_batch_norm().unwrap(), &x1);
}

/// Inference (eval mode, no graph) runs each convolution with its batch norm, residual add and
/// ReLU fused into the GEMM's store; with a graph recorded the same model runs the separate ops.
/// The fused kernels apply the same float operations in the same order, so the logits agree bit
/// for bit, at batch 1 (fused inside the GEMM) and batch 2 (fused in the copy-out).
#[test]
fn fused_inference_equals_the_recorded_forward_bit_for_bit() {
    let resnet = ResNet::new(ResNetConfig::resnet18(3, 14), 8, Device::Cpu).unwrap();
    let densenet = DenseNet::new(DenseNetConfig::densenet121(3, 14), 9, Device::Cpu).unwrap();
    let models: [&dyn Model; 2] = [&resnet, &densenet];
    for model in models {
        // A few training steps first, so the running statistics are not the identity.
        let x = Tensor::rand_uniform([2, 3, 64, 64], 0.0, 1.0, 3, Device::Cpu).unwrap();
        model.set_training(true);
        for _ in 0..2 {
            model.forward(&x).unwrap();
        }
        model.set_training(false);
        for batch in [1, 2] {
            let x = Tensor::rand_uniform([batch, 3, 64, 64], 0.0, 1.0, 4 + batch as u64, Device::Cpu).unwrap();
            let recorded = model.forward(&x).unwrap();
            assert!(!recorded.is_leaf(), "the reference forward must record a graph");
            let fused = {
                let _g = cxr::no_grad();
                model.forward(&x).unwrap()
            };
            assert_eq!(recorded.to_vec().unwrap(), fused.to_vec().unwrap(), "batch {batch}");
        }
    }
}
