//! Pooling on the CPU: max pool, average pool and global average pool, forward and backward.
//! Each (n, c) plane is independent, so planes are spread over the worker pool.

use super::buffers;
use super::simd::{vectorised, SimdLevel};
use crate::backend::geometry::Pool2dGeometry;
use rayon::prelude::*;

/// Yields the in-bounds input rows and columns of the window for output (oy, ox).
fn window(g: &Pool2dGeometry, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let y0 = (oy * g.stride) as isize - g.pad as isize;
    let x0 = (ox * g.stride) as isize - g.pad as isize;
    let clamp = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
    (clamp(y0, g.in_h)..clamp(y0 + g.kernel as isize, g.in_h), clamp(x0, g.in_w)..clamp(x0 + g.kernel as isize, g.in_w))
}

/// The running-maximum update of a window walk in row-major order: `v` replaces the best so far
/// when larger, or when it is the first NaN (once the best is a NaN nothing replaces it), so the
/// walk ends on the first maximum, or the first NaN, as PyTorch's max pool picks it. A select,
/// not a branch: on real activations "is this one larger" is a coin toss.
#[inline(always)]
fn takes_over(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// Max pool forward, separably: a horizontal max over each input row's windows, then a vertical
/// max over those rows. The vertical pass runs along contiguous rows and vectorises; together
/// they do k + k comparisons per output instead of k * k through a branchy window walk.
pub fn max_pool2d_forward(g: &Pool2dGeometry, x: &[f32]) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let in_plane = g.in_h * g.in_w;
    let level = SimdLevel::current();
    let mut y = buffers::uninit(g.output_len());
    y.par_chunks_mut(oh * ow).zip(x.par_chunks(in_plane)).for_each_init(
        || vec![0.0f32; g.in_h * ow],
        |rows_max, (y, x)| {
            vectorised(
                level,
                #[inline(always)]
                || {
                    for (r, out) in rows_max.chunks_exact_mut(ow).enumerate() {
                        row_window_max(g, &x[r * g.in_w..][..g.in_w], out);
                    }
                },
            );
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
#[inline(always)]
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
    let start = first * g.stride - g.pad;
    if (g.kernel, g.stride) == (3, 2) && !interior.is_empty() {
        // The stem pool, by pairs of columns as in `row_window_argmax` (which says why).
        let n = interior.len() - 1;
        let (pairs, _) = row[start..].as_chunks::<2>();
        let pairs = &pairs[..n + 1];
        let w = &row[start + 2 * n..start + 2 * n + 3];
        interior[n] = nan_max(nan_max(w[0], w[1]), w[2]);
        for (j, o) in interior[..n].iter_mut().enumerate() {
            let ([w0, w1], [w2, _]) = (pairs[j], pairs[j + 1]);
            *o = nan_max(nan_max(w0, w1), w2);
        }
    } else if g.kernel == 3 {
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

/// Max pool backward: each output gradient goes to its window's first maximum (row-major order;
/// the first NaN if there is one). Found separably, as the forward finds the maximum: the first
/// maximum of each input row's part of the window, then the first row holding the largest of
/// those. The row-major first maximum lies in the first row that holds the window's maximum, at
/// that row's first maximum, so the two passes find the same element as a walk over the window,
/// with plain loops that vectorise instead of a branchy walk per output (5% of a ResNet18 step).
pub fn max_pool2d_backward(g: &Pool2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let in_plane = g.in_h * g.in_w;
    assert!(in_plane <= u32::MAX as usize, "max pool plane of {in_plane} elements (indices are u32)");
    let level = SimdLevel::current();
    let mut dx = buffers::uninit(g.input_len());
    let scratch = || (vec![0.0f32; g.in_h * ow], vec![0u32; g.in_h * ow], vec![0.0f32; ow], vec![0u32; ow]);
    dx.par_chunks_mut(in_plane).zip(x.par_chunks(in_plane).zip(dy.par_chunks(oh * ow))).for_each_init(
        scratch,
        |(row_max, row_arg, best, arg), (dx, (x, dy))| {
            vectorised(
                level,
                #[inline(always)]
                || {
                    for (r, (m, a)) in row_max.chunks_exact_mut(ow).zip(row_arg.chunks_exact_mut(ow)).enumerate() {
                        row_window_argmax(g, x, r, m, a);
                    }
                },
            );
            // The buffer is recycled (stale values), and zeroing per plane inside the task also
            // touches a fresh allocation's pages by writing, which beats a read-first fault.
            dx.fill(0.0);
            for oy in 0..oh {
                let (rows, _) = window(g, oy, 0);
                vectorised(
                    level,
                    #[inline(always)]
                    || first_row_of_max(rows, ow, row_max, row_arg, best, arg),
                );
                // Windows overlap when stride < kernel, so two outputs can share an element:
                // the adds stay sequential.
                for (&i, &d) in arg.iter().zip(&dy[oy * ow..][..ow]) {
                    dx[i as usize] += d;
                }
            }
        },
    );
    dx
}

/// The first maximum of input row `r`'s part of each output column's window: its value in
/// `out[ox]` and its index within the plane in `arg[ox]`.
#[inline(always)]
fn row_window_argmax(g: &Pool2dGeometry, plane: &[f32], r: usize, out: &mut [f32], arg: &mut [u32]) {
    let row = &plane[r * g.in_w..][..g.in_w];
    let base = r * g.in_w;
    let walk = |cols: std::ops::Range<usize>| {
        let mut best = (row[cols.start], cols.start);
        for (c, &v) in row.iter().enumerate().take(cols.end).skip(cols.start + 1) {
            if takes_over(v, best.0) {
                best = (v, c);
            }
        }
        best
    };
    let first = g.pad.div_ceil(g.stride).min(out.len());
    let last = ((g.in_w + g.pad).saturating_sub(g.kernel) / g.stride + 1).clamp(first, out.len());
    for ox in (0..first).chain(last..out.len()) {
        let (v, c) = walk(window(g, 0, ox).1);
        (out[ox], arg[ox]) = (v, (base + c) as u32);
    }
    let (out, arg) = (&mut out[first..last], &mut arg[first..last]);
    let start = first * g.stride - g.pad;
    if (g.kernel, g.stride) == (3, 2) && !out.is_empty() {
        // ResNet's and DenseNet's stem pool. Window j covers the pairs j and j + 1 of columns
        // from `start` (its third element is pair j + 1's first): indexing whole pairs keeps
        // the loop free of bounds checks, and it vectorises with stride-2 loads. The last
        // window's pair j + 1 may end past the row, so it is walked on its own.
        let n = out.len() - 1;
        let (pairs, _) = row[start..].as_chunks::<2>();
        let pairs = &pairs[..n + 1];
        let first_col = (base + start) as u32;
        let (v, c) = walk(start + 2 * n..start + 2 * n + 3);
        (out[n], arg[n]) = (v, (base + c) as u32);
        for (j, (o, a)) in out[..n].iter_mut().zip(arg[..n].iter_mut()).enumerate() {
            let ([w0, w1], [w2, _]) = (pairs[j], pairs[j + 1]);
            let at = first_col + 2 * j as u32;
            let (mut v, mut c) = (w0, at);
            (v, c) = if takes_over(w1, v) { (w1, at + 1) } else { (v, c) };
            (v, c) = if takes_over(w2, v) { (w2, at + 2) } else { (v, c) };
            (*o, *a) = (v, c);
        }
    } else {
        for (i, (o, a)) in out.iter_mut().zip(arg.iter_mut()).enumerate() {
            let start = (first + i) * g.stride - g.pad;
            let (v, c) = walk(start..start + g.kernel);
            (*o, *a) = (v, (base + c) as u32);
        }
    }
}

/// Over the input rows `rows` (of [`row_window_argmax`]'s results), the first row holding each
/// column's largest value: that value's plane index goes to `arg`.
#[inline(always)]
fn first_row_of_max(
    rows: std::ops::Range<usize>,
    ow: usize,
    row_max: &[f32],
    row_arg: &[u32],
    best: &mut [f32],
    arg: &mut [u32],
) {
    best.copy_from_slice(&row_max[rows.start * ow..][..ow]);
    arg.copy_from_slice(&row_arg[rows.start * ow..][..ow]);
    for r in rows.start + 1..rows.end {
        let (m, a) = (&row_max[r * ow..][..ow], &row_arg[r * ow..][..ow]);
        for (((b, i), &v), &j) in best.iter_mut().zip(arg.iter_mut()).zip(m).zip(a) {
            let take = takes_over(v, *b);
            *b = if take { v } else { *b };
            *i = if take { j } else { *i };
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Index of the window's first maximum by walking it in row-major order (the definition).
    fn walked_argmax(g: &Pool2dGeometry, x: &[f32], oy: usize, ox: usize) -> usize {
        let (rows, cols) = window(g, oy, ox);
        let mut best = (rows.start * g.in_w + cols.start, f32::NEG_INFINITY);
        for r in rows {
            for c in cols.clone() {
                let v = x[r * g.in_w + c];
                if takes_over(v, best.1) {
                    best = (r * g.in_w + c, v);
                }
            }
        }
        best.0
    }

    fn walked_backward(g: &Pool2dGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (oh, ow, plane) = (g.out_h(), g.out_w(), g.in_h * g.in_w);
        let mut dx = vec![0.0; g.input_len()];
        for p in 0..g.batch * g.channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    dx[p * plane + walked_argmax(g, &x[p * plane..][..plane], oy, ox)] += dy[(p * oh + oy) * ow + ox];
                }
            }
        }
        dx
    }

    #[test]
    fn separable_forward_matches_the_window_walk() {
        let mut state = 0x9e37_79b9_u32;
        for (k, stride, pad, h, w) in
            [(3, 2, 1, 13, 17), (3, 2, 1, 12, 16), (3, 1, 1, 6, 9), (2, 2, 0, 8, 7), (3, 2, 0, 9, 11)]
        {
            let g = Pool2dGeometry { batch: 1, channels: 2, in_h: h, in_w: w, kernel: k, stride, pad };
            let x: Vec<f32> = (0..g.input_len())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    if state.is_multiple_of(31) {
                        f32::NAN
                    } else {
                        (state % 9) as f32 - 4.0
                    }
                })
                .collect();
            let (oh, ow, plane) = (g.out_h(), g.out_w(), h * w);
            let y = max_pool2d_forward(&g, &x);
            for p in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let want = x[p * plane + walked_argmax(&g, &x[p * plane..][..plane], oy, ox)];
                        let got = y[(p * oh + oy) * ow + ox];
                        assert_eq!(got.to_bits(), want.to_bits(), "k {k} s {stride} p {pad} {h}x{w} at {p},{oy},{ox}");
                    }
                }
            }
        }
    }

    #[test]
    fn separable_backward_matches_the_window_walk() {
        // Values on a coarse grid so windows hold ties, with NaNs and infinities sprinkled in.
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for (k, stride, pad, h, w) in
            [(3, 2, 1, 13, 17), (3, 1, 1, 6, 9), (2, 2, 0, 8, 7), (3, 2, 0, 9, 11), (5, 3, 2, 12, 10)]
        {
            let g = Pool2dGeometry { batch: 2, channels: 3, in_h: h, in_w: w, kernel: k, stride, pad };
            let x: Vec<f32> = (0..g.input_len())
                .map(|_| match next() % 40 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => -0.0,
                    v => (v % 5) as f32 - 2.0,
                })
                .collect();
            let dy: Vec<f32> = (0..g.output_len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
            let got = max_pool2d_backward(&g, &x, &dy);
            let want = walked_backward(&g, &x, &dy);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "k {k} stride {stride} pad {pad} {h}x{w}"
            );
        }
    }
}
