//! Elementwise CPU kernels: arithmetic, activations, dropout masks and whole-tensor reductions.
//! All are memory-bound: one pass over memory, split across the worker pool for large tensors.

use super::buffers;
use super::simd::{vectorised, SimdLevel};
use crate::backend::philox;
use rayon::prelude::*;

/// Below this many elements a kernel runs on the calling thread (pool hand-off costs more).
pub const PARALLEL_MIN: usize = 1 << 15;
const CHUNK: usize = 1 << 14;

/// out[i] = f(a[i]).
pub fn map(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = buffers::uninit(a.len());
    if a.len() < PARALLEL_MIN {
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x)));
    }
    out
}

/// out[i] = f(a[i], b[i]).
pub fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = buffers::uninit(a.len());
    if a.len() < PARALLEL_MIN {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    } else {
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        });
    }
    out
}

/// dst[i] += src[i].
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    if dst.len() < PARALLEL_MIN {
        dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
    } else {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d += s));
    }
}

/// max(x, 0), propagating NaN as PyTorch does (a NaN must not be hidden as 0).
pub fn relu(x: &[f32]) -> Vec<f32> {
    map(x, |v| if v > 0.0 || v.is_nan() { v } else { 0.0 })
}

/// dy where y > 0 (PyTorch's threshold_backward: 0 where y <= 0, so a NaN output passes dy).
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    zip_map(y, dy, |y, d| if y <= 0.0 { 0.0 } else { d })
}

/// Logistic sigmoid, stable for large |x|.
pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    map(x, sigmoid_scalar)
}

/// Logistic sigmoid of one value without overflow.
#[inline]
pub fn sigmoid_scalar(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// dy * y * (1 - y).
pub fn sigmoid_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    zip_map(y, dy, |y, d| d * y * (1.0 - y))
}

/// Inverted-dropout mask of `len` elements: 0 with probability p, else 1/(1-p).
pub fn dropout_mask(len: usize, p: f32, seed: u64) -> Vec<f32> {
    let keep_scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let level = SimdLevel::current();
    // `start` is a multiple of 4 (chunks are), so element i's draw is word i % 4 of block i / 4.
    let fill = |start: usize, out: &mut [f32]| {
        let whole_groups = out.len() / (4 * MASK_LANES) * (4 * MASK_LANES);
        let mut groups = out.chunks_exact_mut(4 * MASK_LANES);
        for (g, group) in groups.by_ref().enumerate() {
            let first_block = (start / 4 + g * MASK_LANES) as u64;
            vectorised(
                level,
                #[inline(always)]
                || dropout_group(group, first_block, seed, p, keep_scale),
            );
        }
        let tail = groups.into_remainder();
        let tail_start = start + whole_groups;
        for (b, quad) in tail.chunks_mut(4).enumerate() {
            let draws = philox::uniform_block(seed, (tail_start / 4 + b) as u64);
            for (o, u) in quad.iter_mut().zip(draws) {
                *o = if u >= p { keep_scale } else { 0.0 };
            }
        }
    };
    let mut out = buffers::uninit(len);
    if len < PARALLEL_MIN {
        fill(0, &mut out);
    } else {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| fill(c * CHUNK, o));
    }
    out
}

/// Philox blocks drawn together by [`dropout_mask`]: 16 blocks are 64 mask elements, one AVX-512
/// register per Philox word.
const MASK_LANES: usize = 16;

/// `4 * MASK_LANES` mask elements from the blocks `first_block..`, the same values as drawing the
/// blocks one at a time.
#[inline(always)]
fn dropout_group(out: &mut [f32], first_block: u64, seed: u64, p: f32, keep_scale: f32) {
    let words = philox::philox4x32_10_lanes::<MASK_LANES>(first_block, philox::key(seed));
    for (lane, quad) in out.chunks_exact_mut(4).enumerate() {
        for (w, o) in quad.iter_mut().enumerate() {
            *o = if philox::word_to_uniform(words[w][lane]) >= p { keep_scale } else { 0.0 };
        }
    }
}

/// Sum of all elements, accumulated in f64 per chunk so large tensors keep their precision.
pub fn sum_all(x: &[f32]) -> f32 {
    let chunk_sum = |c: &[f32]| c.iter().map(|&v| v as f64).sum::<f64>();
    if x.len() < PARALLEL_MIN {
        chunk_sum(x) as f32
    } else {
        // Partial sums are collected in chunk order and added sequentially, so the result does
        // not depend on how the pool happened to split the work (runs reproduce bit for bit).
        x.par_chunks(CHUNK).map(chunk_sum).collect::<Vec<f64>>().iter().sum::<f64>() as f32
    }
}

/// True when no element is NaN or infinite.
pub fn all_finite(x: &[f32]) -> bool {
    if x.len() < PARALLEL_MIN {
        x.iter().all(|v| v.is_finite())
    } else {
        x.par_chunks(CHUNK).all(|c| c.iter().all(|v| v.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_mask_is_the_per_element_philox_draw() {
        // Lengths that end inside a 64-element group, inside a 4-element block, and span several
        // parallel chunks.
        for len in [3usize, 64, 130, 100_003] {
            let (p, seed) = (0.3f32, 0xfeed_beef_u64);
            let mask = dropout_mask(len, p, seed);
            for (i, &m) in mask.iter().enumerate() {
                let expected = if philox::uniform(seed, i as u64) >= p { 1.0 / (1.0 - p) } else { 0.0 };
                assert_eq!(m, expected, "element {i} of {len}");
            }
        }
    }
}
