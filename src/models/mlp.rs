//! The dense network of the ChestMNIST lab: 28x28 images flattened to 784 inputs, hidden blocks of
//! Linear -> ReLU -> (BatchNorm1d) -> Dropout, and a 14-way linear head (sigmoid in the loss).
//! Parameter names: `fc{i}.weight`, `bn{i}.running_mean`, ..., `classifier.weight`.

use super::{layer_seed, Model, Tap};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::nn::{join, BatchNorm, Dropout, Linear, Module, TensorRole};
use crate::ops;
use crate::tensor::Tensor;

/// One hidden block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HiddenSpec {
    pub units: usize,
    pub batch_norm: bool,
    pub dropout: f32,
}

/// The shape of an MLP.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    pub inputs: usize,
    pub hidden: Vec<HiddenSpec>,
    pub classes: usize,
}

const fn block(units: usize, batch_norm: bool, dropout: f32) -> HiddenSpec {
    HiddenSpec { units, batch_norm, dropout }
}

impl MlpConfig {
    /// The lab's network: 784-512-256-128-64-14, batch norm on the first three blocks,
    /// dropout 0.2/0.2/0.1/0.1.
    pub fn chestmnist() -> MlpConfig {
        MlpConfig {
            inputs: 784,
            hidden: vec![block(512, true, 0.2), block(256, true, 0.2), block(128, true, 0.1), block(64, false, 0.1)],
            classes: 14,
        }
    }
    /// The lab's "deeper" variant: 1024-512-256-128.
    pub fn deeper() -> MlpConfig {
        MlpConfig {
            hidden: vec![block(1024, true, 0.2), block(512, true, 0.2), block(256, true, 0.1), block(128, false, 0.1)],
            ..Self::chestmnist()
        }
    }
    /// The lab's "wider" variant: 1024-1024, dropout only.
    pub fn wider() -> MlpConfig {
        MlpConfig { hidden: vec![block(1024, false, 0.2), block(1024, false, 0.2)], ..Self::chestmnist() }
    }
}

struct Hidden {
    fc: Linear,
    bn: Option<BatchNorm>,
    dropout: Dropout,
}

/// A multi-layer perceptron classifier.
pub struct Mlp {
    config: MlpConfig,
    blocks: Vec<Hidden>,
    classifier: Linear,
}

impl Mlp {
    /// A freshly initialised MLP (PyTorch's default Linear init).
    pub fn new(config: MlpConfig, seed: u64, device: Device) -> Result<Mlp> {
        if config.inputs == 0 || config.classes == 0 || config.hidden.iter().any(|h| h.units == 0) {
            return Err(Error::InvalidArgument { op: "Mlp::new", detail: format!("zero-sized layer in {config:?}") });
        }
        let mut width = config.inputs;
        let mut blocks = Vec::new();
        for (i, h) in config.hidden.iter().enumerate() {
            let s = layer_seed(seed, i as u64);
            blocks.push(Hidden {
                fc: Linear::new(width, h.units, true, s, device)?,
                bn: if h.batch_norm { Some(BatchNorm::new(h.units, device)?) } else { None },
                dropout: Dropout::new(h.dropout, s ^ 0xD0),
            });
            width = h.units;
        }
        let classifier = Linear::new(width, config.classes, true, layer_seed(seed, 999), device)?;
        Ok(Mlp { config, blocks, classifier })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }
}

impl Module for Mlp {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        for (i, b) in self.blocks.iter().enumerate() {
            b.fc.visit(&join(prefix, &format!("fc{}", i + 1)), f);
            if let Some(bn) = &b.bn {
                bn.visit(&join(prefix, &format!("bn{}", i + 1)), f);
            }
        }
        self.classifier.visit(&join(prefix, "classifier"), f);
    }
    fn dropout_calls(&self) -> Vec<u64> {
        self.blocks.iter().map(|b| b.dropout.calls()).collect()
    }
    fn set_dropout_calls(&self, calls: &[u64]) {
        self.blocks.iter().zip(calls).for_each(|(b, &c)| b.dropout.set_calls(c));
    }
    fn set_training(&self, training: bool) {
        for b in &self.blocks {
            b.bn.iter().for_each(|bn| bn.set_training(training));
            b.dropout.set_training(training);
        }
    }
}

impl Model for Mlp {
    /// Accepts [N, inputs] or images [N, C, H, W] with C*H*W == inputs (flattened).
    fn forward_tapped(&self, x: &Tensor, tap: &mut Tap<'_>) -> Result<Tensor> {
        let mut h = if x.shape().rank() == 2 { x.clone() } else { x.flatten()? };
        if h.dims()[1] != self.config.inputs {
            return Err(Error::ShapeMismatch {
                op: "Mlp::forward",
                detail: format!(
                    "input {:?} has {} features, the MLP expects {}",
                    x.dims(),
                    h.dims()[1],
                    self.config.inputs
                ),
            });
        }
        for (i, b) in self.blocks.iter().enumerate() {
            h = ops::relu(&b.fc.forward(&h)?)?;
            if let Some(bn) = &b.bn {
                h = bn.forward(&h)?;
            }
            h = tap(&format!("block{}", i + 1), b.dropout.forward(&h)?)?;
        }
        self.classifier.forward(&h)
    }
    fn tap_points(&self) -> Vec<String> {
        (1..=self.blocks.len()).map(|i| format!("block{i}")).collect()
    }
    fn num_classes(&self) -> usize {
        self.config.classes
    }
}
