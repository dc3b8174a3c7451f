//! Pooling on the CPU: max pool, average pool and global average pool, forward and backward.
//! Each (n, c) plane is independent, so planes are spread over the worker pool.

use super::buffers;
use crate::backend::geometry::Pool2dGeometry;
use rayon::prelude::*;

/// Yields the in-bounds input rows and columns of the window for output (oy, ox).
fn window(g: &Pool2dGeometry, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let y0 = (oy * g.stride) as isize - g.pad as isize;
    let x0 = (ox * g.stride) as isize - g.pad as isize;
    let clamp = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
    (clamp(y0, g.in_h)..clamp(y0 + g.kernel as isize, g.in_h), clamp(x0, g.in_w)..clamp(x0 + g.kernel as isize, g.in_w))
}

/// Index (within the plane) of the first maximum of the window; the first NaN wins, as in
/// PyTorch. Branch-free over the window: on real activations "is this one larger" is a coin
/// toss, and mispredicting it cost more than the comparisons (6% of a ResNet18 training step).
fn argmax(g: &Pool2dGeometry, x: &[f32], oy: usize, ox: usize) -> usize {
    let (rows, cols) = window(g, oy, ox);
    let mut best = (rows.start * g.in_w + cols.start, f32::NEG_INFINITY);
    for r in rows {
        for c in cols.clone() {
            let v = x[r * g.in_w + c];
            // Once best holds a NaN nothing replaces it; before that a NaN replaces anything.
            let take = v > best.1 || (v.is_nan() && !best.1.is_nan());
            best = if take { (r * g.in_w + c, v) } else { best };
        }
    }
    best.0
}

/// Max pool forward, separably: a horizontal max over each input row's windows, then a vertical
/// max over those rows. The vertical pass runs along contiguous rows and vectorises; together
/// they do k + k comparisons per output instead of k * k through a branchy window walk.
pub fn max_pool2d_forward(g: &Pool2dGeometry, x: &[f32]) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let in_plane = g.in_h * g.in_w;
    let mut y = buffers::uninit(g.output_len());
    y.par_chunks_mut(oh * ow).zip(x.par_chunks(in_plane)).for_each_init(
        || vec![0.0f32; g.in_h * ow],
        |rows_max, (y, x)| {
            for (r, out) in rows_max.chunks_exact_mut(ow).enumerate() {
                row_window_max(g, &x[r * g.in_w..][..g.in_w], out);
            }
            for (oy, out) in y.chunks_exact_mut(ow).enumerate() {
                let (rows, _) = window(g, oy, 0);
                out.copy_from_slice(&rows_max[rows.start * ow..][..ow]);
                for r in rows.start + 1..rows.end {
                    out.iter_mut().zip(&rows_max[r * ow..][..ow]).for_each(|(m, &v)| *m = nan_max(*m, v));
                }
            }
        },
    );
    y
}

/// out[ox] = max of `row` over output column ox's window (in-bounds part).
fn row_window_max(g: &Pool2dGeometry, row: &[f32], out: &mut [f32]) {
    // Output columns whose window lies wholly inside the row need no clipping: every column
    // from `first` to `last` (exclusive), in the usual case all but the first and the last.
    let first = g.pad.div_ceil(g.stride).min(out.len());
    let last = ((g.in_w + g.pad).saturating_sub(g.kernel) / g.stride + 1).clamp(first, out.len());
    let clipped = |ox: usize| {
        let (_, cols) = window(g, 0, ox);
        row[cols.clone()].iter().fold(row[cols.start], |m, &v| nan_max(m, v))
    };
    for (ox, o) in out.iter_mut().enumerate().take(first) {
        *o = clipped(ox);
    }
    let interior = &mut out[first..last];
    if g.kernel == 3 {
        // ResNet's and DenseNet's stem pool, unrolled.
        for (i, o) in interior.iter_mut().enumerate() {
            let start = (first + i) * g.stride - g.pad;
            let w = &row[start..start + 3];
            *o = nan_max(nan_max(w[0], w[1]), w[2]);
        }
    } else {
        for (i, o) in interior.iter_mut().enumerate() {
            let start = (first + i) * g.stride - g.pad;
            let w = &row[start..start + g.kernel];
            *o = w[1..].iter().fold(w[0], |m, &v| nan_max(m, v));
        }
    }
    for (ox, o) in out.iter_mut().enumerate().skip(last) {
        *o = clipped(ox);
    }
}

/// max(a, b) that propagates NaN from either side, as PyTorch's max pool does, and keeps `a` (the
/// earlier element) on ties, so 0.0 vs -0.0 resolves as the first maximum does. A select, not a
/// branch, so loops over it vectorise.
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a >= b || a.is_nan() {
        a
    } else {
        b
    }
}

/// Max pool backward: each output gradient goes to its window's first maximum.
pub fn max_pool2d_backward(g: &Pool2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let in_plane = g.in_h * g.in_w;
    let mut dx = buffers::uninit(g.input_len());
    dx.par_chunks_mut(in_plane).zip(x.par_chunks(in_plane).zip(dy.par_chunks(oh * ow))).for_each(|(dx, (x, dy))| {
        // The buffer is recycled (stale values), and zeroing per plane inside the task also
        // touches a fresh allocation's pages by writing, which beats a read-first fault.
        dx.fill(0.0);
        for oy in 0..oh {
            for ox in 0..ow {
                dx[argmax(g, x, oy, ox)] += dy[oy * ow + ox];
            }
        }
    });
    dx
}

/// Average pool forward; the divisor is the full window (padding counts, as PyTorch's default).
pub fn avg_pool2d_forward(g: &Pool2dGeometry, x: &[f32]) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let in_plane = g.in_h * g.in_w;
    let inv = 1.0 / (g.kernel * g.kernel) as f32;
    let mut y = buffers::uninit(g.output_len());
    y.par_chunks_mut(oh * ow).zip(x.par_chunks(in_plane)).for_each(|(y, x)| {
        for oy in 0..oh {
            for ox in 0..ow {
                let (rows, cols) = window(g, oy, ox);
                let mut acc = 0.0;
                for r in rows {
                    acc += x[r * g.in_w + cols.start..r * g.in_w + cols.end].iter().sum::<f32>();
                }
                y[oy * ow + ox] = acc * inv;
            }
        }
    });
    y
}

/// Average pool backward.
pub fn avg_pool2d_backward(g: &Pool2dGeometry, dy: &[f32]) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let in_plane = g.in_h * g.in_w;
    let inv = 1.0 / (g.kernel * g.kernel) as f32;
    let mut dx = buffers::uninit(g.input_len());
    dx.par_chunks_mut(in_plane).zip(dy.par_chunks(oh * ow)).for_each(|(dx, dy)| {
        dx.fill(0.0);
        for oy in 0..oh {
            for ox in 0..ow {
                let d = dy[oy * ow + ox] * inv;
                let (rows, cols) = window(g, oy, ox);
                for r in rows {
                    dx[r * g.in_w + cols.start..r * g.in_w + cols.end].iter_mut().for_each(|v| *v += d);
                }
            }
        }
    });
    dx
}

/// Mean of each plane: [rows, plane] -> [rows].
pub fn global_avg_pool_forward(x: &[f32], plane: usize) -> Vec<f32> {
    let inv = 1.0 / plane as f32;
    x.par_chunks(plane).map(|p| p.iter().sum::<f32>() * inv).collect()
}

/// Spreads dy[row] / plane over the row's plane.
pub fn global_avg_pool_backward(dy: &[f32], plane: usize) -> Vec<f32> {
    let inv = 1.0 / plane as f32;
    let mut dx = buffers::uninit(dy.len() * plane);
    dx.par_chunks_mut(plane).zip(dy.par_iter()).for_each(|(p, &d)| p.fill(d * inv));
    dx
}
