//! DenseNet-BC as torchvision builds it (Huang et al. 2017): DenseNet121 is growth 32, bottleneck
//! width 4 x growth, blocks of 6/12/24/16 layers, transitions halving the channels, then
//! `features.norm5`, ReLU, global average pool and `classifier`.
//!
//! Names follow torchvision's state_dict: `features.conv0`, `features.norm0`,
//! `features.denseblock{b}.denselayer{l}.{norm1,conv1,norm2,conv2}`,
//! `features.transition{t}.{norm,conv}`, `features.norm5`, `classifier`.
//!
//! Memory: each layer reads the concatenation of every earlier feature map of its block, as
//! torchvision's default (non-checkpointed) path does. At 224x224 that is about 36 MB of
//! concatenated activations per image, so batch 16 training stays within a few GiB.

use super::{layer_seed, Model, Tap};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::nn::fold::fold_into_conv;
use crate::nn::{join, BatchNorm, Conv2d, Conv2dSpec, Linear, Module, TensorRole};
use crate::ops;
use crate::tensor::init::FanMode;
use crate::tensor::Tensor;

/// The shape of a DenseNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseNetConfig {
    pub growth_rate: usize,
    pub blocks: Vec<usize>,
    pub init_features: usize,
    pub bn_size: usize,
    pub in_channels: usize,
    pub classes: usize,
}

impl DenseNetConfig {
    /// DenseNet121: growth 32, blocks [6, 12, 24, 16], 64 initial features, bn_size 4.
    pub fn densenet121(in_channels: usize, classes: usize) -> Self {
        DenseNetConfig {
            growth_rate: 32,
            blocks: vec![6, 12, 24, 16],
            init_features: 64,
            bn_size: 4,
            in_channels,
            classes,
        }
    }
}

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize, seed: u64, device: Device) -> Result<Conv2d> {
    let spec = Conv2dSpec { in_channels: cin, out_channels: cout, kernel, stride, padding: kernel / 2, bias: false };
    Conv2d::new(spec, FanMode::FanIn, seed, device)
}

/// relu(norm(conv(x))), the norm absent once folded. In eval mode with no graph recorded
/// (inference), one fused convolution.
fn conv_norm_relu(conv: &Conv2d, norm: Option<&BatchNorm>, x: &Tensor) -> Result<Tensor> {
    match norm {
        Some(n) if n.is_training() => ops::relu(&n.forward(&conv.forward(x)?)?),
        _ => conv.forward_fused(
            x,
            ops::ConvTail { norm: norm.and_then(BatchNorm::eval_params), residual: None, relu: true },
        ),
    }
}

/// BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv, producing `growth_rate` new channels.
struct DenseLayer {
    norm1: BatchNorm,
    conv1: Conv2d,
    /// None once folded into `conv1`.
    norm2: Option<BatchNorm>,
    conv2: Conv2d,
}

impl DenseLayer {
    fn new(cin: usize, c: &DenseNetConfig, seed: u64, device: Device) -> Result<DenseLayer> {
        let width = c.bn_size * c.growth_rate;
        Ok(DenseLayer {
            norm1: BatchNorm::new(cin, device)?,
            conv1: conv(cin, width, 1, 1, layer_seed(seed, 1), device)?,
            norm2: Some(BatchNorm::new(width, device)?),
            conv2: conv(width, c.growth_rate, 3, 1, layer_seed(seed, 2), device)?,
        })
    }
    /// The layer's new features from the block's features so far (their concatenation is its
    /// input; at inference it is never built).
    fn forward(&self, features: &[&Tensor]) -> Result<Tensor> {
        let h = self.norm1.forward_relu_cat(features)?;
        let h = conv_norm_relu(&self.conv1, self.norm2.as_ref(), &h)?;
        self.conv2.forward(&h)
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        self.norm1.visit(&join(prefix, "norm1"), f);
        self.conv1.visit(&join(prefix, "conv1"), f);
        if let Some(norm2) = &self.norm2 {
            norm2.visit(&join(prefix, "norm2"), f);
        }
        self.conv2.visit(&join(prefix, "conv2"), f);
    }
    fn set_training(&self, training: bool) {
        self.norm1.set_training(training);
        self.norm2.iter().for_each(|n| n.set_training(training));
    }
}

/// BN -> ReLU -> 1x1 conv (halving channels) -> 2x2 average pool.
struct Transition {
    norm: BatchNorm,
    conv: Conv2d,
}

impl Transition {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv.forward(&self.norm.forward_relu(x)?)?;
        ops::avg_pool2d(&h, 2, 2, 0)
    }
}

/// A dense block's layers and the transition after it (none after the last block).
struct Stage {
    layers: Vec<DenseLayer>,
    transition: Option<Transition>,
}

/// A DenseNet classifier.
pub struct DenseNet {
    config: DenseNetConfig,
    conv0: Conv2d,
    /// None once folded into `conv0`.
    norm0: Option<BatchNorm>,
    stages: Vec<Stage>,
    norm5: BatchNorm,
    classifier: Linear,
}

impl DenseNet {
    /// A freshly initialised DenseNet with torchvision's init: Kaiming-normal (fan_in) convs,
    /// unit batch-norm scale, zero classifier bias.
    pub fn new(config: DenseNetConfig, seed: u64, device: Device) -> Result<DenseNet> {
        if config.in_channels == 0 || config.classes == 0 || config.blocks.is_empty() || config.growth_rate == 0 {
            return Err(Error::InvalidArgument { op: "DenseNet::new", detail: format!("{config:?}") });
        }
        let conv0 = conv(config.in_channels, config.init_features, 7, 2, layer_seed(seed, 0), device)?;
        let norm0 = Some(BatchNorm::new(config.init_features, device)?);
        let mut channels = config.init_features;
        let mut stages = Vec::new();
        for (b, &count) in config.blocks.iter().enumerate() {
            let mut layers = Vec::new();
            for l in 0..count {
                let s = layer_seed(seed, 1000 * (b as u64 + 1) + l as u64);
                layers.push(DenseLayer::new(channels, &config, s, device)?);
                channels += config.growth_rate;
            }
            let transition = if b + 1 < config.blocks.len() {
                let t = Transition {
                    norm: BatchNorm::new(channels, device)?,
                    conv: conv(channels, channels / 2, 1, 1, layer_seed(seed, 10_000 + b as u64), device)?,
                };
                channels /= 2;
                Some(t)
            } else {
                None
            };
            stages.push(Stage { layers, transition });
        }
        let norm5 = BatchNorm::new(channels, device)?;
        let classifier = Linear::new(channels, config.classes, true, layer_seed(seed, 99_999), device)?;
        if let Some(b) = &classifier.bias {
            *b.storage_mut() = device.backend()?.full(config.classes, 0.0)?;
        }
        Ok(DenseNet { config, conv0, norm0, stages, norm5, classifier })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &DenseNetConfig {
        &self.config
    }

    /// Folds the batch norms that follow a convolution (`norm0` into `conv0`, each dense layer's
    /// `norm2` into its `conv1`) for inference. The pre-activation norms (`norm1`, transitions,
    /// `norm5`) follow a concatenation, not a conv, and stay. Outputs change by float rounding.
    pub fn fold_batch_norm(&mut self) -> Result<()> {
        if let Some(norm0) = self.norm0.take() {
            fold_into_conv(&mut self.conv0, &norm0)?;
        }
        for layer in self.stages.iter_mut().flat_map(|s| s.layers.iter_mut()) {
            if let Some(norm2) = layer.norm2.take() {
                fold_into_conv(&mut layer.conv1, &norm2)?;
            }
        }
        Ok(())
    }

    /// The classification head (`classifier`).
    pub fn head(&self) -> &Linear {
        &self.classifier
    }
}

impl Module for DenseNet {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        let features = join(prefix, "features");
        self.conv0.visit(&join(&features, "conv0"), f);
        if let Some(norm0) = &self.norm0 {
            norm0.visit(&join(&features, "norm0"), f);
        }
        for (b, stage) in self.stages.iter().enumerate() {
            let block = join(&features, &format!("denseblock{}", b + 1));
            for (l, layer) in stage.layers.iter().enumerate() {
                layer.visit(&join(&block, &format!("denselayer{}", l + 1)), f);
            }
            if let Some(t) = &stage.transition {
                let name = join(&features, &format!("transition{}", b + 1));
                t.norm.visit(&join(&name, "norm"), f);
                t.conv.visit(&join(&name, "conv"), f);
            }
        }
        self.norm5.visit(&join(&features, "norm5"), f);
        self.classifier.visit(&join(prefix, "classifier"), f);
    }
    fn set_training(&self, training: bool) {
        self.norm0.iter().for_each(|n| n.set_training(training));
        for stage in &self.stages {
            stage.layers.iter().for_each(|l| l.set_training(training));
            stage.transition.iter().for_each(|t| t.norm.set_training(training));
        }
        self.norm5.set_training(training);
    }
}

impl Model for DenseNet {
    /// x: [N, in_channels, H, W]. Tap points: `features.denseblock{b}` (after the block's
    /// concatenation), `features.transition{t}`, and `features.norm5` (after its ReLU).
    fn forward_tapped(&self, x: &Tensor, tap: &mut Tap<'_>) -> Result<Tensor> {
        if x.shape().rank() != 4 || x.dims()[1] != self.config.in_channels {
            return Err(Error::ShapeMismatch {
                op: "DenseNet::forward",
                detail: format!("input {:?}, expected [N, {}, H, W]", x.dims(), self.config.in_channels),
            });
        }
        let h = conv_norm_relu(&self.conv0, self.norm0.as_ref(), x)?;
        let mut h = ops::max_pool2d(&h, 3, 2, 1)?;
        for (b, stage) in self.stages.iter().enumerate() {
            let mut features = vec![h];
            for layer in &stage.layers {
                let new = layer.forward(&features.iter().collect::<Vec<_>>())?;
                features.push(new);
            }
            h = tap(
                &format!("features.denseblock{}", b + 1),
                ops::cat_channels(&features.iter().collect::<Vec<_>>())?,
            )?;
            if let Some(t) = &stage.transition {
                h = tap(&format!("features.transition{}", b + 1), t.forward(&h)?)?;
            }
        }
        let h = tap("features.norm5", self.norm5.forward_relu(&h)?)?;
        self.classifier.forward(&ops::global_avg_pool(&h)?)
    }
    fn tap_points(&self) -> Vec<String> {
        let mut taps = Vec::new();
        for b in 1..=self.stages.len() {
            taps.push(format!("features.denseblock{b}"));
            if b < self.stages.len() {
                taps.push(format!("features.transition{b}"));
            }
        }
        taps.push("features.norm5".into());
        taps
    }
    fn num_classes(&self) -> usize {
        self.config.classes
    }
    fn fold_batch_norm(&mut self) -> Result<()> {
        DenseNet::fold_batch_norm(self)
    }
}
