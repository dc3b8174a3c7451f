//! End-to-end check of the engine: layers, autograd and the CPU kernels together learn a small
//! synthetic task, and the README's library example runs as written.

use cxr::nn::{BatchNorm, Conv2d, Conv2dSpec, Dropout, Linear, Module, TensorRole};
use cxr::tensor::init::{FanMode, Rng};
use cxr::{ops, Device, Tensor};

struct TinyNet {
    conv: Conv2d,
    bn: BatchNorm,
    drop: Dropout,
    fc: Linear,
}

impl TinyNet {
    fn new() -> cxr::Result<TinyNet> {
        let spec = Conv2dSpec { in_channels: 1, out_channels: 8, kernel: 3, stride: 1, padding: 1, bias: false };
        Ok(TinyNet {
            conv: Conv2d::new(spec, FanMode::FanOut, 1, Device::Cpu)?,
            bn: BatchNorm::new(8, Device::Cpu)?,
            drop: Dropout::new(0.1, 5),
            fc: Linear::new(8 * 4 * 4, 2, true, 2, Device::Cpu)?,
        })
    }
    fn forward(&self, x: &Tensor) -> cxr::Result<Tensor> {
        let h = ops::relu(&self.bn.forward(&self.conv.forward(x)?)?)?;
        let h = ops::max_pool2d(&h, 3, 2, 1)?; // 8x8 -> 4x4
        self.fc.forward(&self.drop.forward(&h.flatten()?)?)
    }
}

impl Module for TinyNet {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        self.conv.visit(&cxr::nn::join(prefix, "conv"), f);
        self.bn.visit(&cxr::nn::join(prefix, "bn"), f);
        self.fc.visit(&cxr::nn::join(prefix, "fc"), f);
    }
    fn set_training(&self, training: bool) {
        self.bn.set_training(training);
        self.drop.set_training(training);
    }
}

/// 8x8 images with a bright 2x2 blob in the left (label 0) or right (label 1) half.
fn batch(rng: &mut Rng, n: usize) -> (Tensor, Tensor) {
    let mut x = vec![0.0f32; n * 64];
    let mut t = vec![0.0f32; n * 2];
    for i in 0..n {
        let right = rng.below(2) as usize;
        let (r, c) = (rng.below(7) as usize, rng.below(3) as usize + 4 * right);
        for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            x[i * 64 + (r + dr) * 8 + c + dc] = 1.0;
        }
        t[i * 2 + right] = 1.0;
    }
    (Tensor::from_vec(x, [n, 1, 8, 8]).unwrap(), Tensor::from_vec(t, [n, 2]).unwrap())
}

fn sgd_step(model: &dyn Module, lr: f32) {
    for p in model.parameters() {
        let g = p.tensor.grad().expect("every parameter gets a gradient").to_vec().unwrap();
        let mut s = p.tensor.storage_mut();
        let w = s.host_mut().expect("CPU storage");
        w.iter_mut().zip(&g).for_each(|(w, g)| *w -= lr * g);
    }
    model.zero_grad();
}

#[test]
fn tiny_convnet_learns_left_versus_right() {
    let model = TinyNet::new().unwrap();
    assert_eq!(
        model.named_tensors().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "fc.weight", "fc.bias"]
    );
    let mut rng = Rng::new(11);
    let (x_eval, t_eval) = batch(&mut rng, 64);
    let eval_loss = |m: &TinyNet| {
        let _g = cxr::no_grad();
        m.set_training(false);
        let l = ops::bce_with_logits(&m.forward(&x_eval).unwrap(), &t_eval, None).unwrap();
        m.set_training(true);
        l.to_scalar().unwrap()
    };
    let before = eval_loss(&model);
    for _ in 0..60 {
        let (x, t) = batch(&mut rng, 16);
        let loss = ops::bce_with_logits(&model.forward(&x).unwrap(), &t, None).unwrap();
        loss.backward().unwrap();
        sgd_step(&model, 0.2);
    }
    let after = eval_loss(&model);
    assert!(after < 0.5 * before, "eval loss {before} -> {after}: the network did not learn");
    // Running statistics moved away from their initial values during training.
    let rm = model.bn.state.running_mean.to_vec().unwrap();
    assert!(rm.iter().any(|&v| v.abs() > 1e-3), "running mean never updated: {rm:?}");
}

#[test]
fn inference_mode_records_nothing() {
    let model = TinyNet::new().unwrap();
    model.set_training(false);
    let (x, _) = batch(&mut Rng::new(3), 2);
    let _g = cxr::no_grad();
    let y = model.forward(&x).unwrap();
    assert!(!y.requires_grad());
    assert!(y.is_leaf());
}

#[test]
fn readme_example_runs() {
    let conv = Conv2d::new(
        Conv2dSpec { in_channels: 1, out_channels: 8, kernel: 3, stride: 1, padding: 1, bias: false },
        FanMode::FanOut,
        0,
        Device::Cpu,
    )
    .unwrap();
    let bn = BatchNorm::new(8, Device::Cpu).unwrap();
    let fc = Linear::new(8, 14, true, 1, Device::Cpu).unwrap();
    let x = Tensor::rand_uniform([4, 1, 28, 28], 0.0, 1.0, 7, Device::Cpu).unwrap();
    let h = ops::relu(&bn.forward(&conv.forward(&x).unwrap()).unwrap()).unwrap();
    let logits = fc.forward(&ops::global_avg_pool(&h).unwrap()).unwrap();
    let targets = Tensor::zeros([4, 14], Device::Cpu).unwrap();
    let loss = ops::bce_with_logits(&logits, &targets, None).unwrap();
    loss.backward().unwrap();
    assert_eq!(conv.weight.grad().unwrap().dims(), [8, 1, 3, 3]);
    assert!(fc.bias.as_ref().unwrap().grad().is_some());
}
