//! Measurements behind `tools bench` and `benches/`: GEMM and conv2d throughput at the shapes that
//! matter (ResNet18's layers), timed with warm-up and reported as median/min/max.
//!
//! Speed is measured here, never asserted in tests. `scripts/bench_pytorch.py` runs the same
//! names and shapes in PyTorch so the two can be compared as ratios.

use crate::backend::cpu::gemm::{sgemm, MatRef};
use crate::backend::cpu::{conv, simd::SimdLevel};
use crate::backend::Conv2dGeometry;
use crate::tensor::init::Rng;
use std::time::Instant;

/// One benchmark result. Times are milliseconds per call.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: String,
    pub threads: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Floating-point operations per call, when meaningful.
    pub flops: Option<f64>,
}

impl Measurement {
    /// GFLOP/s at the median time.
    pub fn gflops(&self) -> Option<f64> {
        self.flops.map(|f| f / (self.median_ms * 1e-3) / 1e9)
    }

    /// One JSON object: name, threads, median, min, max, unit (and gflops when known).
    pub fn to_json(&self) -> String {
        let gflops = self.gflops().map(|g| format!(",\"gflops\":{g:.2}")).unwrap_or_default();
        format!(
            "{{\"name\":\"{}\",\"threads\":{},\"median\":{:.4},\"min\":{:.4},\"max\":{:.4},\"unit\":\"ms\"{}}}",
            self.name, self.threads, self.median_ms, self.min_ms, self.max_ms, gflops
        )
    }
}

/// How long to measure each case.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Untimed calls first (page faults, caches, pool start-up).
    pub warmup: usize,
    /// Timed calls at least.
    pub min_iters: usize,
    /// Stop adding calls after this much time, once `min_iters` are done.
    pub max_seconds: f64,
}

impl Budget {
    /// A budget that gives stable medians on this class of machine.
    pub fn standard() -> Budget {
        Budget { warmup: 2, min_iters: 5, max_seconds: 2.0 }
    }
    /// A short budget for smoke runs.
    pub fn quick() -> Budget {
        Budget { warmup: 1, min_iters: 2, max_seconds: 0.3 }
    }
}

/// Times `f` under `budget`.
pub fn measure(name: &str, flops: Option<f64>, budget: Budget, mut f: impl FnMut()) -> Measurement {
    for _ in 0..budget.warmup {
        f();
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < budget.min_iters || start.elapsed().as_secs_f64() < budget.max_seconds {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if times.len() >= 1000 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    Measurement {
        name: name.to_string(),
        threads: rayon::current_num_threads(),
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        flops,
    }
}

fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.uniform() as f32 - 0.5).collect()
}

/// C = A B at n x n x n for each size.
pub fn gemm_benches(sizes: &[usize], budget: Budget) -> Vec<Measurement> {
    let level = SimdLevel::current();
    sizes
        .iter()
        .map(|&n| {
            let a = random_vec(n * n, 1);
            let b = random_vec(n * n, 2);
            let mut c = vec![0.0; n * n];
            let flops = 2.0 * (n as f64).powi(3);
            measure(&format!("gemm.{n}"), Some(flops), budget, || {
                sgemm(level, n, n, n, MatRef::normal(&a, n), MatRef::normal(&b, n), 0.0, &mut c, n)
            })
        })
        .collect()
}

/// One distinct convolution of a network at 224x224 and how many times the network runs it.
#[derive(Debug, Clone, Copy)]
pub struct ConvLayer {
    pub name: &'static str,
    pub in_channels: usize,
    pub out_channels: usize,
    pub size: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub count: usize,
    /// The stem's input is data: training never needs its input gradient.
    pub needs_input_grad: bool,
}

impl ConvLayer {
    /// The geometry at a batch size.
    pub fn geometry(&self, batch: usize) -> Conv2dGeometry {
        Conv2dGeometry {
            batch,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            in_h: self.size,
            in_w: self.size,
            kernel_h: self.kernel,
            kernel_w: self.kernel,
            stride_h: self.stride,
            stride_w: self.stride,
            pad_h: self.padding,
            pad_w: self.padding,
        }
    }
}

const fn layer(
    name: &'static str,
    io: (usize, usize),
    size: usize,
    kernel: usize,
    stride: usize,
    count: usize,
) -> ConvLayer {
    ConvLayer {
        name,
        in_channels: io.0,
        out_channels: io.1,
        size,
        kernel,
        stride,
        padding: kernel / 2,
        count,
        needs_input_grad: true,
    }
}

/// ResNet18's distinct convolutions at a 224x224, 3-channel input.
pub const RESNET18_CONVS: [ConvLayer; 11] = [
    ConvLayer { needs_input_grad: false, ..layer("conv1", (3, 64), 224, 7, 2, 1) },
    layer("layer1.3x3", (64, 64), 56, 3, 1, 4),
    layer("layer2.0.conv1", (64, 128), 56, 3, 2, 1),
    layer("layer2.0.downsample", (64, 128), 56, 1, 2, 1),
    layer("layer2.3x3", (128, 128), 28, 3, 1, 3),
    layer("layer3.0.conv1", (128, 256), 28, 3, 2, 1),
    layer("layer3.0.downsample", (128, 256), 28, 1, 2, 1),
    layer("layer3.3x3", (256, 256), 14, 3, 1, 3),
    layer("layer4.0.conv1", (256, 512), 14, 3, 2, 1),
    layer("layer4.0.downsample", (256, 512), 14, 1, 2, 1),
    layer("layer4.3x3", (512, 512), 7, 3, 1, 3),
];

/// ResNet18's distinct convolutions with MedMNIST's small-image stem (3x3 stride-1 conv1, no
/// max pool) at a 28x28, 1-channel input: the `train.resnet18-small.b128.28px` target's shapes.
pub const RESNET18_SMALL_CONVS: [ConvLayer; 11] = [
    ConvLayer { needs_input_grad: false, ..layer("small.conv1", (1, 64), 28, 3, 1, 1) },
    layer("small.layer1.3x3", (64, 64), 28, 3, 1, 4),
    layer("small.layer2.0.conv1", (64, 128), 28, 3, 2, 1),
    layer("small.layer2.0.downsample", (64, 128), 28, 1, 2, 1),
    layer("small.layer2.3x3", (128, 128), 14, 3, 1, 3),
    layer("small.layer3.0.conv1", (128, 256), 14, 3, 2, 1),
    layer("small.layer3.0.downsample", (128, 256), 14, 1, 2, 1),
    layer("small.layer3.3x3", (256, 256), 7, 3, 1, 3),
    layer("small.layer4.0.conv1", (256, 512), 7, 3, 2, 1),
    layer("small.layer4.0.downsample", (256, 512), 7, 1, 2, 1),
    layer("small.layer4.3x3", (512, 512), 4, 3, 1, 3),
];

/// DenseNet121's convolutions at a 224x224, 3-channel input, one representative 1x1 bottleneck
/// per dense block (its input channels near the block's mean; counted once per layer), the 3x3
/// growth convolution, the transitions and the stem.
pub const DENSENET121_CONVS: [ConvLayer; 12] = [
    ConvLayer { needs_input_grad: false, ..layer("densenet121.conv0", (3, 64), 224, 7, 2, 1) },
    layer("densenet121.block1.1x1", (160, 128), 56, 1, 1, 6),
    layer("densenet121.block1.3x3", (128, 32), 56, 3, 1, 6),
    layer("densenet121.transition1", (256, 128), 56, 1, 1, 1),
    layer("densenet121.block2.1x1", (320, 128), 28, 1, 1, 12),
    layer("densenet121.block2.3x3", (128, 32), 28, 3, 1, 12),
    layer("densenet121.transition2", (512, 256), 28, 1, 1, 1),
    layer("densenet121.block3.1x1", (640, 128), 14, 1, 1, 24),
    layer("densenet121.block3.3x3", (128, 32), 14, 3, 1, 24),
    layer("densenet121.transition3", (1024, 512), 14, 1, 1, 1),
    layer("densenet121.block4.1x1", (768, 128), 7, 1, 1, 16),
    layer("densenet121.block4.3x3", (128, 32), 7, 3, 1, 16),
];

/// Forward, backward-input and backward-weight of every ResNet18 convolution at `batch`, then a
/// `conv2d.resnet18.b{batch}.total` line: the time of one network's worth of conv forward and
/// backward (each layer times its count; no input gradient for the stem). With `layers`
/// non-empty, only the convolutions whose name contains one of them run, and the total sums those.
pub fn conv_benches(batch: usize, budget: Budget, layers: &[String]) -> Vec<Measurement> {
    conv_set_benches(&RESNET18_CONVS, "resnet18", batch, budget, layers)
}

/// [`conv_benches`] for DenseNet121's convolutions ([`DENSENET121_CONVS`]), with a
/// `conv2d.densenet121.b{batch}.total` line.
pub fn densenet_conv_benches(batch: usize, budget: Budget, layers: &[String]) -> Vec<Measurement> {
    conv_set_benches(&DENSENET121_CONVS, "densenet121", batch, budget, layers)
}

/// [`conv_benches`] for ResNet18 with the small-image stem ([`RESNET18_SMALL_CONVS`]) at
/// `batch`, with a `conv2d.resnet18-small.b{batch}.total` line.
pub fn small_conv_benches(batch: usize, budget: Budget, layers: &[String]) -> Vec<Measurement> {
    conv_set_benches(&RESNET18_SMALL_CONVS, "resnet18-small", batch, budget, layers)
}

fn conv_set_benches(
    layers: &[ConvLayer],
    net: &str,
    batch: usize,
    budget: Budget,
    only: &[String],
) -> Vec<Measurement> {
    let level = SimdLevel::current();
    let mut out = Vec::new();
    let mut total = [0.0f64; 3];
    let mut total_flops = 0.0;
    let wanted = |l: &ConvLayer| only.is_empty() || only.iter().any(|c| l.name.contains(c.as_str()));
    for &l in layers.iter().filter(|l| wanted(l)) {
        let g = l.geometry(batch);
        let x = random_vec(g.input_len(), 3);
        let w = random_vec(g.weight_len(), 4);
        let dy = random_vec(g.output_len(), 5);
        let mut y = vec![0.0; g.output_len()];
        let mut dx = vec![0.0; g.input_len()];
        let mut dw = vec![0.0; g.weight_len()];
        let flops = g.forward_flops();
        let prefix = format!("conv2d.{}.b{batch}", l.name);
        // Each call driven from the pool, as a training step runs its kernels (`run_on_pool`).
        let fwd = measure(&format!("{prefix}.fwd"), Some(flops), budget, || {
            crate::run_on_pool(|| conv::conv2d_forward(level, &g, &x, &w, None, &mut y))
        });
        let bwd_data = measure(&format!("{prefix}.bwd_data"), Some(flops), budget, || {
            crate::run_on_pool(|| conv::conv2d_backward_input(level, &g, &dy, &w, &mut dx))
        });
        let bwd_weight = measure(&format!("{prefix}.bwd_weight"), Some(flops), budget, || {
            crate::run_on_pool(|| conv::conv2d_backward_weight(level, &g, &x, &dy, &mut dw))
        });
        let count = l.count as f64;
        let data_factor = if l.needs_input_grad { 1.0 } else { 0.0 };
        for (i, (m, factor)) in [(&fwd, 1.0), (&bwd_data, data_factor), (&bwd_weight, 1.0)].iter().enumerate() {
            total[i] += m.median_ms * count * factor;
            total_flops += flops * count * factor;
        }
        out.extend([fwd, bwd_data, bwd_weight]);
    }
    let sum: f64 = total.iter().sum();
    out.push(Measurement {
        name: format!("conv2d.{net}.b{batch}.total"),
        threads: rayon::current_num_threads(),
        median_ms: sum,
        min_ms: sum,
        max_ms: sum,
        flops: Some(total_flops),
    });
    out
}

/// A readable table of measurements.
pub fn format_table(rows: &[Measurement]) -> String {
    let mut s = format!(
        "{:<44} {:>7} {:>11} {:>11} {:>11} {:>10}\n",
        "name", "threads", "median ms", "min ms", "max ms", "GFLOP/s"
    );
    for m in rows {
        let gf = m.gflops().map(|g| format!("{g:.1}")).unwrap_or_else(|| "-".into());
        s += &format!(
            "{:<44} {:>7} {:>11.3} {:>11.3} {:>11.3} {:>10}\n",
            m.name, m.threads, m.median_ms, m.min_ms, m.max_ms, gf
        );
    }
    s
}

/// Whole-model cases: inference latency at batch 1 and 224x224 (eval mode, no graph), Grad-CAM of
/// one class at batch 1, and one training step (forward, BCE loss, backward) at a batch, for the architectures users run.
pub fn model_benches(archs: &[crate::models::Architecture], train_batch: usize, budget: Budget) -> Vec<Measurement> {
    use crate::models::Architecture;
    use crate::Device;
    let mut out = Vec::new();
    for &arch in archs {
        let (channels, size) = match arch {
            Architecture::Mlp | Architecture::MlpDeeper | Architecture::MlpWider => (1, 28),
            _ => (3, 224),
        };
        let Ok(model) = arch.build(channels, 14, 0, Device::Cpu) else { continue };
        let input = |batch: usize| crate::Tensor::rand_uniform([batch, channels, size, size], 0.0, 1.0, 7, Device::Cpu);
        let Ok(x1) = input(1) else { continue };
        model.set_training(false);
        out.push(measure(&format!("model.{arch}.infer.b1"), None, budget, || {
            let _no_grad = crate::autograd::no_grad();
            let _ = crate::run_on_pool(|| model.forward(&x1));
        }));
        // Grad-CAM of one class at the default layer, as `tools gradcam` computes it.
        if model.set_trainable(&|_| true, false).is_ok() && !model.tap_points().is_empty() {
            let options = crate::explain::CamOptions::default();
            out.push(measure(&format!("model.{arch}.gradcam.b1"), None, budget, || {
                let _ = crate::explain::grad_cam(model.as_ref(), &x1, &[(0, 2)], &options);
            }));
            let _ = model.set_trainable(&|_| true, true);
        }
        if train_batch > 0 {
            let Ok(xb) = input(train_batch) else { continue };
            let Ok(targets) = crate::Tensor::zeros([train_batch, 14], Device::Cpu) else { continue };
            model.set_training(true);
            let name = format!("model.{arch}.train.b{train_batch}");
            let mut m = measure(&name, None, budget, || {
                let _ = crate::run_on_pool(|| -> crate::Result<()> {
                    let loss = crate::ops::bce_with_logits(&model.forward(&xb)?, &targets, None)?;
                    loss.backward()?;
                    model.zero_grad();
                    Ok(())
                });
            });
            // Images per second of training, as the targets quote it, in the flops slot's place.
            m.flops = None;
            out.push(m);
        }
    }
    out
}

/// One training workload of the training-speed targets: an architecture, its input and batch,
/// and how many steps make one measured call.
struct TrainCase {
    name: &'static str,
    arch: crate::models::Architecture,
    channels: usize,
    size: usize,
    batch: usize,
    /// Images in one measured call (one step, or a whole epoch for the MLP).
    images: usize,
}

/// The training cases the targets name (forward, BCE loss, backward, Adam step; data already in
/// memory): the ChestMNIST MLP over one epoch of 78,468 images at batch 128, ResNet18 at batch 32
/// and 224x224, ResNet18 at batch 128 and 28x28 with both stems, DenseNet121 at batch 16. Names
/// carry the images per call so images/s = images / median seconds. With `cases` non-empty, only
/// the cases whose name contains one of them run.
pub fn training_benches(budget: Budget, cases: &[String]) -> Vec<Measurement> {
    let wanted = |name: &str| cases.is_empty() || cases.iter().any(|c| name.contains(c.as_str()));
    use crate::models::Architecture as A;
    let all = [
        TrainCase { name: "train.mlp.epoch78468", arch: A::Mlp, channels: 1, size: 28, batch: 128, images: 78_468 },
        TrainCase { name: "train.resnet18.b32", arch: A::ResNet18, channels: 3, size: 224, batch: 32, images: 32 },
        TrainCase {
            name: "train.resnet18.b128.28px",
            arch: A::ResNet18,
            channels: 1,
            size: 28,
            batch: 128,
            images: 128,
        },
        TrainCase {
            name: "train.resnet18-small.b128.28px",
            arch: A::ResNet18Small,
            channels: 1,
            size: 28,
            batch: 128,
            images: 128,
        },
        TrainCase {
            name: "train.densenet121.b16",
            arch: A::DenseNet121,
            channels: 3,
            size: 224,
            batch: 16,
            images: 16,
        },
    ];
    all.iter()
        .filter(|c| wanted(c.name))
        .filter_map(|c| {
            training_case(c, budget).map_err(|e| eprintln!("warning: benchmark {} failed: {e}", c.name)).ok()
        })
        .collect()
}

/// Measures one [`TrainCase`]: `images / batch` full steps, then one step on the remainder.
fn training_case(c: &TrainCase, budget: Budget) -> crate::Result<Measurement> {
    use crate::train::{Optimizer, OptimizerConfig, OptimizerKind};
    use crate::{Device, Tensor};
    let model = c.arch.build(c.channels, 14, 0, Device::Cpu)?;
    model.set_training(true);
    let mut optimizer = Optimizer::new(OptimizerConfig::new(OptimizerKind::Adam, 1e-3), model.parameters())?;
    let input = |batch: usize| Tensor::rand_uniform([batch, c.channels, c.size, c.size], 0.0, 1.0, 7, Device::Cpu);
    let targets = |batch: usize| Tensor::rand_uniform([batch, 14], 0.0, 1.0, 8, Device::Cpu);
    let full = (input(c.batch)?, targets(c.batch)?);
    let rest = c.images % c.batch;
    let last = if rest > 0 { Some((input(rest)?, targets(rest)?)) } else { None };
    let mut step = |(x, t): &(Tensor, Tensor)| -> crate::Result<()> {
        crate::run_on_pool(|| {
            let loss = crate::ops::bce_with_logits(&model.forward(x)?, t, None)?;
            loss.backward()?;
            optimizer.step(1e-3)?;
            optimizer.zero_grad();
            Ok(())
        })
    };
    let mut failure = None;
    let m = measure(c.name, None, budget, || {
        let run = (0..c.images / c.batch)
            .try_for_each(|_| step(&full))
            .and_then(|()| last.as_ref().map_or(Ok(()), &mut step));
        if let Err(e) = run {
            failure.get_or_insert(e);
        }
    });
    failure.map_or(Ok(m), Err)
}

/// The data pipeline alone, as the loader runs it (images in parallel on the worker pool): PNG
/// decode, resize and crop to 224, the training augmentation (random resized crop, rotation,
/// brightness, contrast) and ImageNet normalisation to 3 channels, over up to 64 images read from
/// `dir` (an NIH-style folder with `images/`) into memory first, so disk speed is not measured.
/// The name carries the image count: images/s = count / median seconds.
pub fn data_benches(dir: &std::path::Path, budget: Budget) -> crate::Result<Vec<Measurement>> {
    use crate::data::{transform, Augment, Normalization, Preprocess};
    use rayon::prelude::*;
    let folder = dir.join("images");
    let mut paths: Vec<_> = std::fs::read_dir(&folder)
        .map_err(|e| crate::Error::io(&folder, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    paths.sort();
    paths.truncate(64);
    if paths.is_empty() {
        return Err(crate::Error::format(&folder, "no PNG images to measure the data pipeline on"));
    }
    let files: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| std::fs::read(p).map(|b| (p.display().to_string(), b)).map_err(|e| crate::Error::io(p, e)))
        .collect::<crate::Result<_>>()?;
    let preprocess = Preprocess { channels: 3, size: 224, normalization: Normalization::ImageNet };
    let augment =
        Augment { crop_scale: Some((0.85, 1.0)), rotation_deg: 10.0, hflip: false, brightness: 0.1, contrast: 0.1 };
    let mut failure = None;
    let name = format!("data.decode_augment.224.x{}", files.len());
    let m = measure(&name, None, budget, || {
        let run = files.par_iter().enumerate().try_for_each(|(i, (name, bytes))| {
            let img = transform::decode_image(bytes, name)?;
            transform::preprocess(&img, &preprocess, Some((&augment, i as u64))).map(|_| ())
        });
        if let Err(e) = run {
            failure.get_or_insert(e);
        }
    });
    failure.map_or(Ok(vec![m]), Err)
}

/// C = A B at n x n x n for each size on a device (CUDA): the kernel plus a one-value download
/// per call, so each timing covers the finished GEMM. Errors when the device cannot be used.
pub fn device_gemm_benches(device: crate::Device, sizes: &[usize], budget: Budget) -> crate::Result<Vec<Measurement>> {
    use crate::backend::Layout;
    let be = device.backend()?;
    let mut out = Vec::new();
    for &n in sizes {
        let a = be.copy_from_host(random_vec(n * n, 1))?;
        let b = be.copy_from_host(random_vec(n * n, 2))?;
        let flops = 2.0 * (n as f64).powi(3);
        let mut failure = None;
        let m = measure(&format!("gemm.{device}.{n}"), Some(flops), budget, || {
            let run = || -> crate::Result<()> {
                let c = be.matmul(&a, Layout::Normal, &b, Layout::Normal, n, n, n)?;
                be.sum_all(&c).map(|_| ())
            };
            if let Err(e) = run() {
                failure.get_or_insert(e);
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        out.push(m);
    }
    Ok(out)
}

/// One ResNet18 training step (forward, BCE, backward) at `batch` x 3 x `size` x `size` on a
/// device. Errors when the device cannot be used.
pub fn device_train_bench(
    device: crate::Device,
    batch: usize,
    size: usize,
    budget: Budget,
) -> crate::Result<Measurement> {
    use crate::models::Architecture;
    let model = Architecture::ResNet18.build(3, 14, 0, device)?;
    let x = crate::Tensor::rand_uniform([batch, 3, size, size], 0.0, 1.0, 7, crate::Device::Cpu)?.to_device(device)?;
    let targets = crate::Tensor::zeros([batch, 14], device)?;
    model.set_training(true);
    let mut failure = None;
    let m = measure(&format!("model.resnet18.train.{device}.b{batch}.{size}px"), None, budget, || {
        let step = || -> crate::Result<f32> {
            let loss = crate::ops::bce_with_logits(&model.forward(&x)?, &targets, None)?;
            loss.backward()?;
            model.zero_grad();
            loss.to_scalar()
        };
        if let Err(e) = step() {
            failure.get_or_insert(e);
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(m),
    }
}
