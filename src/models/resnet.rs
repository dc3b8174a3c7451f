//! ResNet as torchvision builds it (He et al. 2016; torchvision's V1.5 puts the stride of a
//! Bottleneck on its 3x3 conv): ResNet18/34 with BasicBlock, ResNet50 with Bottleneck, plus the
//! small-image stem MedMNIST uses for 28x28 and 64x64 inputs (3x3 stride-1 conv1, no max pool).
//!
//! Names follow torchvision's state_dict: `conv1.weight`, `bn1.*`, `layer{1-4}.{i}.conv{1,2,3}`,
//! `layer{1-4}.{i}.bn{1,2,3}`, `layer{1-4}.0.downsample.{0,1}`, `fc.weight`, `fc.bias`.

use super::{layer_seed, Model, Tap};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::nn::fold::fold_into_conv;
use crate::nn::{join, BatchNorm, Conv2d, Conv2dSpec, Linear, Module, TensorRole};
use crate::ops;
use crate::tensor::init::FanMode;
use crate::tensor::Tensor;

/// Which residual block a ResNet stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet18/34).
    Basic,
    /// 1x1 -> 3x3 -> 1x1 with 4x expansion (ResNet50).
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The input stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// torchvision: 7x7 stride-2 conv1 and a 3x3 stride-2 max pool (inputs of 32+ pixels).
    ImageNet,
    /// MedMNIST: 3x3 stride-1 conv1 and no max pool (28x28 and 64x64 inputs).
    Small,
}

/// The shape of a ResNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNetConfig {
    pub block: BlockKind,
    pub layers: [usize; 4],
    pub stem: Stem,
    pub in_channels: usize,
    pub classes: usize,
}

impl ResNetConfig {
    /// ResNet18: BasicBlock x [2, 2, 2, 2].
    pub fn resnet18(in_channels: usize, classes: usize) -> Self {
        Self::with(BlockKind::Basic, [2, 2, 2, 2], in_channels, classes)
    }
    /// ResNet34: BasicBlock x [3, 4, 6, 3].
    pub fn resnet34(in_channels: usize, classes: usize) -> Self {
        Self::with(BlockKind::Basic, [3, 4, 6, 3], in_channels, classes)
    }
    /// ResNet50: Bottleneck x [3, 4, 6, 3].
    pub fn resnet50(in_channels: usize, classes: usize) -> Self {
        Self::with(BlockKind::Bottleneck, [3, 4, 6, 3], in_channels, classes)
    }
    fn with(block: BlockKind, layers: [usize; 4], in_channels: usize, classes: usize) -> Self {
        ResNetConfig { block, layers, stem: Stem::ImageNet, in_channels, classes }
    }
    /// The same network with MedMNIST's small-image stem.
    pub fn small_stem(self) -> Self {
        ResNetConfig { stem: Stem::Small, ..self }
    }
}

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize, seed: u64, device: Device) -> Result<Conv2d> {
    let spec = Conv2dSpec { in_channels: cin, out_channels: cout, kernel, stride, padding: kernel / 2, bias: false };
    Conv2d::new(spec, FanMode::FanOut, seed, device)
}

/// conv + batch norm, the unit every block repeats. After [`ResNet::fold_batch_norm`] the batch
/// norm lives inside the conv's weight and bias and `bn` is None.
struct ConvBn {
    conv: Conv2d,
    bn: Option<BatchNorm>,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, kernel: usize, stride: usize, seed: u64, device: Device) -> Result<ConvBn> {
        Ok(ConvBn { conv: conv(cin, cout, kernel, stride, seed, device)?, bn: Some(BatchNorm::new(cout, device)?) })
    }
    /// relu?(bn(conv(x)) + residual). In eval mode with no graph recorded (inference), one fused
    /// convolution.
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let norm = match &self.bn {
            Some(bn) => match bn.eval_params() {
                Some(params) => Some(params),
                None => return Self::train_tail(bn, self.conv.forward(x)?, residual, relu),
            },
            None => None,
        };
        self.conv.forward_fused(x, ops::ConvTail { norm, residual, relu })
    }
    /// A training-mode unit after its convolution: with a ReLU, the batch norm, residual add and
    /// ReLU as one op.
    fn train_tail(bn: &BatchNorm, y: Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        if relu {
            return bn.forward_add_relu(&y, residual);
        }
        let y = bn.forward(&y)?;
        match residual {
            Some(r) => ops::add(&y, r),
            None => Ok(y),
        }
    }
    fn visit(&self, conv_name: &str, bn_name: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        self.conv.visit(conv_name, f);
        if let Some(bn) = &self.bn {
            bn.visit(bn_name, f);
        }
    }
    fn set_training(&self, training: bool) {
        self.bn.iter().for_each(|bn| bn.set_training(training));
    }
    fn fold(&mut self) -> Result<()> {
        if let Some(bn) = self.bn.take() {
            fold_into_conv(&mut self.conv, &bn)?;
        }
        Ok(())
    }
}

/// A residual block: a chain of conv+bn (ReLU between them), plus an optional projection.
struct Block {
    units: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(kind: BlockKind, cin: usize, planes: usize, stride: usize, seed: u64, device: Device) -> Result<Block> {
        let cout = planes * kind.expansion();
        let s = |i| layer_seed(seed, i);
        let units = match kind {
            BlockKind::Basic => vec![
                ConvBn::new(cin, planes, 3, stride, s(0), device)?,
                ConvBn::new(planes, planes, 3, 1, s(1), device)?,
            ],
            BlockKind::Bottleneck => vec![
                ConvBn::new(cin, planes, 1, 1, s(0), device)?,
                ConvBn::new(planes, planes, 3, stride, s(1), device)?,
                ConvBn::new(planes, cout, 1, 1, s(2), device)?,
            ],
        };
        let downsample =
            if stride != 1 || cin != cout { Some(ConvBn::new(cin, cout, 1, stride, s(3), device)?) } else { None };
        Ok(Block { units, downsample })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x, None, false)?,
            None => x.clone(),
        };
        let last = self.units.len().saturating_sub(1);
        let mut h = x.clone();
        for (i, unit) in self.units.iter().enumerate() {
            // The residual add rides on the last convolution, before its ReLU.
            h = unit.forward(&h, (i == last).then_some(&identity), true)?;
        }
        Ok(h)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        for (i, unit) in self.units.iter().enumerate() {
            unit.visit(&join(prefix, &format!("conv{}", i + 1)), &join(prefix, &format!("bn{}", i + 1)), f);
        }
        if let Some(d) = &self.downsample {
            d.visit(&join(prefix, "downsample.0"), &join(prefix, "downsample.1"), f);
        }
    }

    fn set_training(&self, training: bool) {
        self.units.iter().chain(&self.downsample).for_each(|u| u.set_training(training));
    }
}

/// A ResNet classifier.
pub struct ResNet {
    config: ResNetConfig,
    stem: ConvBn,
    layers: [Vec<Block>; 4],
    fc: Linear,
}

/// Tap points of a ResNet, in forward order.
pub const RESNET_TAPS: [&str; 5] = ["stem", "layer1", "layer2", "layer3", "layer4"];

impl ResNet {
    /// A freshly initialised ResNet with torchvision's init: Kaiming-normal (fan_out) convs, unit
    /// batch-norm scale, PyTorch-default Linear head.
    pub fn new(config: ResNetConfig, seed: u64, device: Device) -> Result<ResNet> {
        if config.in_channels == 0 || config.classes == 0 || config.layers.contains(&0) {
            return Err(Error::InvalidArgument { op: "ResNet::new", detail: format!("{config:?}") });
        }
        let stem = match config.stem {
            Stem::ImageNet => ConvBn::new(config.in_channels, 64, 7, 2, layer_seed(seed, 0), device)?,
            Stem::Small => ConvBn::new(config.in_channels, 64, 3, 1, layer_seed(seed, 0), device)?,
        };
        let mut cin = 64;
        let mut layers: [Vec<Block>; 4] = Default::default();
        for (li, (layer, &count)) in layers.iter_mut().zip(&config.layers).enumerate() {
            let planes = 64 << li;
            for bi in 0..count {
                let stride = if li > 0 && bi == 0 { 2 } else { 1 };
                let s = layer_seed(seed, 100 * (li as u64 + 1) + bi as u64);
                layer.push(Block::new(config.block, cin, planes, stride, s, device)?);
                cin = planes * config.block.expansion();
            }
        }
        let fc = Linear::new(cin, config.classes, true, layer_seed(seed, 9999), device)?;
        Ok(ResNet { config, stem, layers, fc })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Folds every batch norm into the convolution before it (inference only: afterwards the
    /// network has no batch statistics to train with, and its tensors are named `conv*.bias`
    /// instead of `bn*`). Outputs change by float rounding only.
    pub fn fold_batch_norm(&mut self) -> Result<()> {
        self.stem.fold()?;
        for block in self.layers.iter_mut().flatten() {
            block.units.iter_mut().chain(block.downsample.iter_mut()).try_for_each(ConvBn::fold)?;
        }
        Ok(())
    }

    /// True once [`fold_batch_norm`](Self::fold_batch_norm) has run.
    pub fn is_folded(&self) -> bool {
        self.stem.bn.is_none()
    }

    /// The classification head (`fc`), e.g. to re-initialise it for a new label set.
    pub fn head(&self) -> &Linear {
        &self.fc
    }
}

impl Module for ResNet {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {
        self.stem.visit(&join(prefix, "conv1"), &join(prefix, "bn1"), f);
        for (li, layer) in self.layers.iter().enumerate() {
            for (bi, block) in layer.iter().enumerate() {
                block.visit(&join(prefix, &format!("layer{}.{bi}", li + 1)), f);
            }
        }
        self.fc.visit(&join(prefix, "fc"), f);
    }
    fn set_training(&self, training: bool) {
        self.stem.set_training(training);
        self.layers.iter().flatten().for_each(|b| b.set_training(training));
    }
}

impl Model for ResNet {
    /// x: [N, in_channels, H, W].
    fn forward_tapped(&self, x: &Tensor, tap: &mut Tap<'_>) -> Result<Tensor> {
        if x.shape().rank() != 4 || x.dims()[1] != self.config.in_channels {
            return Err(Error::ShapeMismatch {
                op: "ResNet::forward",
                detail: format!("input {:?}, expected [N, {}, H, W]", x.dims(), self.config.in_channels),
            });
        }
        let mut h = self.stem.forward(x, None, true)?;
        if self.config.stem == Stem::ImageNet {
            h = ops::max_pool2d(&h, 3, 2, 1)?;
        }
        h = tap("stem", h)?;
        for (li, layer) in self.layers.iter().enumerate() {
            for block in layer {
                h = block.forward(&h)?;
            }
            h = tap(RESNET_TAPS[li + 1], h)?;
        }
        self.fc.forward(&ops::global_avg_pool(&h)?)
    }
    fn tap_points(&self) -> Vec<String> {
        RESNET_TAPS.iter().map(|s| s.to_string()).collect()
    }
    fn num_classes(&self) -> usize {
        self.config.classes
    }
    fn fold_batch_norm(&mut self) -> Result<()> {
        ResNet::fold_batch_norm(self)
    }
}
