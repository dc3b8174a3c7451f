//! Single-precision GEMM: C = op(A) * op(B) + beta * C, row-major.
//!
//! The structure follows BLIS: both operands are packed into panels (A into `MR`-row panels, B
//! into `NR`-column panels, each panel stored k-major so the micro-kernel reads it
//! sequentially), then a register-blocked micro-kernel computes one `MR x NR` tile of C per call
//! with broadcast-FMA. Transposed operands are handled entirely by the packing, so every layout
//! combination runs the same kernel.
//!
//! Submodules:
//! - [`driver`]: packing into reusable buffers, the cache blocking and the split across threads;
//! - [`pack`]: copying a panel of either layout into the k-major panel format;
//! - [`buffer`]: the 64-byte-aligned, per-thread reusable packing buffer;
//! - `kernel_avx512`, `kernel_avx2`, [`kernel_portable`]: the micro-kernels, one per
//!   [`SimdLevel`].

mod buffer;
mod driver;
#[cfg(target_arch = "x86_64")]
mod kernel_avx2;
#[cfg(target_arch = "x86_64")]
mod kernel_avx512;
mod kernel_portable;
mod pack;

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

    /// Panics unless the slice holds a logical `rows x cols` matrix with this layout and `ld`.
    fn check(&self, what: &str, rows: usize, cols: usize) {
        let (outer, inner) = match self.layout {
            Layout::Normal => (rows, cols),
            Layout::Transposed => (cols, rows),
        };
        assert!(self.ld >= inner, "sgemm: {what}.ld = {} < {inner}", self.ld);
        let needed = (outer - 1) * self.ld + inner;
        assert!(self.data.len() >= needed, "sgemm: {what} has {} elements, needs {needed}", self.data.len());
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
    if m == 0 || n == 0 {
        return;
    }
    // These checks are what make the kernels' raw-pointer stores into C sound: every tile they
    // write lies inside `c[..(m - 1) * ldc + n]`.
    assert!(ldc >= n, "sgemm: ldc = {ldc} < n = {n}");
    let c_needed = (m - 1) * ldc + n;
    assert!(c.len() >= c_needed, "sgemm: C has {} elements, needs {c_needed}", c.len());
    if k == 0 {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    a.check("A", m, k);
    b.check("B", k, n);
    let problem = driver::Problem { m, n, k, a, b, beta, ldc };
    // `sgemm` is safe to call with any level, so the CPU features are checked here (a cached
    // atomic load each) rather than trusted: the SIMD kernels are only sound where they exist.
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if is_x86_feature_detected!("avx512f") => {
            // SAFETY: AVX-512F was just detected.
            unsafe { driver::gemm::<kernel_avx512::Avx512>(&problem, c) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 | SimdLevel::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
            // SAFETY: AVX2 and FMA were just detected.
            unsafe { driver::gemm::<kernel_avx2::Avx2>(&problem, c) }
        }
        // SAFETY: the portable kernel needs no CPU feature.
        _ => unsafe { driver::gemm::<kernel_portable::Portable>(&problem, c) },
    }
}

/// C = beta * C on the `m x n` block, the whole product when k == 0. beta == 0 writes zeros so
/// that NaN in C does not survive.
fn scale_c(m: usize, n: usize, beta: f32, c: &mut [f32], ldc: usize) {
    for row in c.chunks_mut(ldc).take(m) {
        let row = &mut row[..n];
        if beta == 0.0 {
            row.fill(0.0);
        } else {
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
}
