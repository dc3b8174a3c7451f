//! Matrix helpers around the GEMM kernel: products, row-broadcast bias, column sums, transposes.

use super::buffers;
use super::gemm::{sgemm, Layout, MatRef};
use super::simd::SimdLevel;

/// C[m x n] = op(A) * op(B).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    level: SimdLevel,
    a: &[f32],
    a_layout: Layout,
    b: &[f32],
    b_layout: Layout,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let mut c = buffers::uninit(m * n);
    let lda = if a_layout == Layout::Normal { k } else { m };
    let ldb = if b_layout == Layout::Normal { n } else { k };
    sgemm(
        level,
        m,
        n,
        k,
        MatRef { data: a, ld: lda, layout: a_layout },
        MatRef { data: b, ld: ldb, layout: b_layout },
        0.0,
        &mut c,
        n,
    );
    c
}

/// x[r, c] += bias[c].
pub fn add_row_bias_assign(x: &mut [f32], bias: &[f32], cols: usize) {
    for row in x.chunks_exact_mut(cols) {
        row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
    }
}

/// Column sums of x[rows x cols].
pub fn sum_rows(x: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// Transpose of x[rows x cols], in cache-sized tiles.
pub fn transpose2d(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = buffers::uninit(rows * cols);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    out
}
