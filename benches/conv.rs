//! Convolution kernel timings on ResNet18's layer shapes at 224x224.
//!
//! `cargo bench --bench conv` prints, per shape, batch and kernel, the median wall time and
//! GFLOP/s (2 * multiply-adds of the forward pass, the same count for all three kernels), then
//! the time one ResNet18 training step spends in conv kernels (each shape times its count in the
//! network; conv1's input gradient is listed but not needed in training).
//! `CONV_BENCH_BATCHES=1,32` picks batch sizes; `CONV_BENCH_FILTER=3x3` keeps matching rows.

use std::time::{Duration, Instant};

use cxr::backend::cpu::conv::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
use cxr::backend::cpu::simd::SimdLevel;
use cxr::backend::geometry::Conv2dGeometry;

/// (name, c_in, c_out, input size, kernel, stride, pad, how many times ResNet18 uses it).
type Layer = (&'static str, usize, usize, usize, usize, usize, usize, usize);

const LAYERS: [Layer; 11] = [
    ("conv1 3->64 7x7/2 @224", 3, 64, 224, 7, 2, 3, 1),
    ("64->64 3x3/1 @56", 64, 64, 56, 3, 1, 1, 4),
    ("64->128 3x3/2 @56", 64, 128, 56, 3, 2, 1, 1),
    ("128->128 3x3/1 @28", 128, 128, 28, 3, 1, 1, 3),
    ("64->128 1x1/2 @56", 64, 128, 56, 1, 2, 0, 1),
    ("128->256 3x3/2 @28", 128, 256, 28, 3, 2, 1, 1),
    ("256->256 3x3/1 @14", 256, 256, 14, 3, 1, 1, 3),
    ("128->256 1x1/2 @28", 128, 256, 28, 1, 2, 0, 1),
    ("256->512 3x3/2 @14", 256, 512, 14, 3, 2, 1, 1),
    ("512->512 3x3/1 @7", 512, 512, 7, 3, 1, 1, 3),
    ("256->512 1x1/2 @14", 256, 512, 14, 1, 2, 0, 1),
];

/// Median of `f`'s wall time: a warm-up call, then up to `max_iters` calls within ~1.5 s.
fn median_time(max_iters: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < max_iters && (times.len() < 3 || start.elapsed() < Duration::from_millis(1500)) {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5)
        .collect()
}

/// Times the three kernels on one shape; returns their medians in ms.
fn bench_shape(level: SimdLevel, g: &Conv2dGeometry) -> [f64; 3] {
    let (x, w, dy) = (fill(g.input_len(), 1), fill(g.weight_len(), 2), fill(g.output_len(), 3));
    let bias = fill(g.out_channels, 4);
    let (mut y, mut dx, mut dw) = (vec![0.0; g.output_len()], vec![0.0; g.input_len()], vec![0.0; g.weight_len()]);
    let iters = if g.batch > 4 { 5 } else { 30 };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    [
        ms(median_time(iters, || conv2d_forward(level, g, &x, &w, Some(&bias), &mut y))),
        ms(median_time(iters, || conv2d_backward_input(level, g, &dy, &w, &mut dx))),
        ms(median_time(iters, || conv2d_backward_weight(level, g, &x, &dy, &mut dw))),
    ]
}

fn main() {
    let level = SimdLevel::current();
    let batches: Vec<usize> = std::env::var("CONV_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let filter = std::env::var("CONV_BENCH_FILTER").unwrap_or_default();
    println!("conv kernels, SIMD {}, {} threads", level.name(), rayon::current_num_threads());
    for batch in batches {
        println!("\nbatch {batch}");
        println!(
            "{:<24} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7}",
            "layer", "fwd ms", "GF/s", "bwd-in ms", "GF/s", "bwd-w ms", "GF/s"
        );
        let mut step = [0.0f64; 3];
        for (name, ci, co, size, k, s, p, count) in LAYERS {
            if !name.contains(filter.as_str()) {
                continue;
            }
            let g = Conv2dGeometry {
                batch,
                in_channels: ci,
                out_channels: co,
                in_h: size,
                in_w: size,
                kernel_h: k,
                kernel_w: k,
                stride_h: s,
                stride_w: s,
                pad_h: p,
                pad_w: p,
            };
            let t = bench_shape(level, &g);
            let gf = |ms: f64| g.forward_flops() / ms / 1e6;
            println!(
                "{name:<24} {:>9.3} {:>7.1} {:>9.3} {:>7.1} {:>9.3} {:>7.1}",
                t[0],
                gf(t[0]),
                t[1],
                gf(t[1]),
                t[2],
                gf(t[2])
            );
            for (acc, v) in step.iter_mut().zip(t) {
                *acc += v * count as f64;
            }
        }
        println!(
            "ResNet18 step (shape x count): fwd {:.2} ms, bwd-in {:.2} ms, bwd-w {:.2} ms, total {:.2} ms",
            step[0],
            step[1],
            step[2],
            step.iter().sum::<f64>()
        );
    }
}
