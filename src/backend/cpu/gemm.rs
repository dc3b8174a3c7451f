//! Single-precision GEMM: C = op(A) * op(B) + beta * C, row-major.
//!
//! PLACEHOLDER BODY: a correct but naive triple loop, to be replaced by the packed, cache-blocked,
//! SIMD implementation (same signature).

use super::simd::SimdLevel;

/// How a GEMM operand is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Stored as the logical matrix, row-major: element (i, j) at `i * ld + j`.
    Normal,
    /// Stored transposed, row-major: logical element (i, j) at `j * ld + i`.
    Transposed,
}

/// One GEMM operand: a row-major slice, its leading dimension and whether it is transposed.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub layout: Layout,
}

impl<'a> MatRef<'a> {
    /// A matrix stored row-major as written, with leading dimension `ld`.
    pub fn normal(data: &'a [f32], ld: usize) -> Self {
        MatRef { data, ld, layout: Layout::Normal }
    }
    /// A matrix stored transposed (the logical matrix is the transpose of the stored one).
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        MatRef { data, ld, layout: Layout::Transposed }
    }
    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        match self.layout {
            Layout::Normal => self.data[i * self.ld + j],
            Layout::Transposed => self.data[j * self.ld + i],
        }
    }
}

/// C[m x n] (row-major, leading dimension `ldc`) = A[m x k] * B[k x n] + beta * C.
///
/// `beta` is 0.0 (overwrite; C's old contents, even NaN, are ignored) or any other value to
/// accumulate. Uses the worker pool for large problems. Panics only if slices are too short for the
/// given sizes, which callers inside the crate guarantee.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    level: SimdLevel,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let _ = level;
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a.at(i, p) * b.at(p, j);
            }
            let dst = &mut c[i * ldc + j];
            *dst = if beta == 0.0 { acc } else { acc + beta * *dst };
        }
    }
}
