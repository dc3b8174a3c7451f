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
    sgemm_with(level, m, n, k, AOperand::Matrix(a), BOperand::Matrix(b), beta, c, ldc, &Epilogue::NONE);
}

/// The A operand of [`sgemm_with`]: a matrix to pack during the call, or rows of one packed
/// earlier by [`pack_a`] (a layer's weights, packed once and reused by every call).
#[derive(Clone, Copy)]
pub enum AOperand<'a> {
    Matrix(MatRef<'a>),
    /// Rows `first_row .. first_row + m` of a packed matrix; `first_row` is a multiple of the
    /// kernel's panel height ([`PackedA::panel_rows`]).
    Packed {
        packed: &'a PackedA,
        first_row: usize,
    },
}

/// The B operand of [`sgemm_with`]: a matrix to pack, or a source that writes B's panels itself.
#[derive(Clone, Copy)]
pub enum BOperand<'a> {
    Matrix(MatRef<'a>),
    Panels(&'a dyn PanelSource),
}

/// A `k x n` B operand that is never stored as a matrix: it writes the panels the kernel reads
/// straight from data of its own (a convolution's input, unrolled as it is packed), which saves
/// writing the matrix out and reading it back.
pub trait PanelSource: Sync {
    /// Writes rows `p0 .. p0 + kc` of B's columns from `j0` on into `dst`, a whole number of
    /// consecutive panels of `nr` columns: `panel[p * nr + w]` is element (p0 + p, j0 + i * nr
    /// + w) of panel i, zero for columns at or past `n`. Every float of `dst` is written.
    fn pack(&self, dst: &mut [f32], nr: usize, j0: usize, n: usize, p0: usize, kc: usize);
}

/// What happens to each element of C after the product, in this order: `+ row_bias[i]`,
/// the per-row affine map `row_norm`, `+ residual[i, j]`, then ReLU. Applied while the tile is
/// still in L1, so a convolution's bias, an eval-mode batch norm, a residual connection and the
/// activation cost no extra pass over memory.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// One value per row of C.
    pub row_bias: Option<&'a [f32]>,
    /// `(v - mean[i]) * scale[i] + shift[i]`: an eval-mode batch norm, written as the norm
    /// kernel computes it so that fusing changes no bit.
    pub row_norm: Option<RowNorm<'a>>,
    /// A row-major `m x n` matrix with the given leading dimension, added to C.
    pub residual: Option<(&'a [f32], usize)>,
    /// max(v, 0), keeping NaN (as the ReLU op does).
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Nothing after the product.
    pub const NONE: Epilogue<'static> = Epilogue { row_bias: None, row_norm: None, residual: None, relu: false };

    fn is_none(&self) -> bool {
        self.row_bias.is_none() && self.row_norm.is_none() && self.residual.is_none() && !self.relu
    }

    /// Panics unless the bias and residual cover an `m x n` C.
    fn check(&self, m: usize, n: usize) {
        if let Some(bias) = self.row_bias {
            assert!(bias.len() >= m, "sgemm: row bias has {} values for {m} rows", bias.len());
        }
        if let Some(norm) = self.row_norm {
            let shortest = norm.mean.len().min(norm.scale.len()).min(norm.shift.len());
            assert!(shortest >= m, "sgemm: row norm has {shortest} values for {m} rows");
        }
        if let Some((res, ld)) = self.residual {
            assert!(ld >= n && res.len() >= (m - 1) * ld + n, "sgemm: residual too short for {m} x {n}");
        }
    }
}

/// A per-row affine map `(v - mean[i]) * scale[i] + shift[i]`.
#[derive(Clone, Copy, Debug)]
pub struct RowNorm<'a> {
    pub mean: &'a [f32],
    pub scale: &'a [f32],
    pub shift: &'a [f32],
}

/// An `m x k` A operand packed once into the panel format of one SIMD level's kernel, for
/// [`AOperand::Packed`]. Packing a 3x3 conv's weights transposes them, which at batch 1 costs as
/// much as a third of the multiply itself: inference packs each layer once instead of per call.
#[derive(Debug)]
pub struct PackedA {
    level: SimdLevel,
    mr: usize,
    m: usize,
    k: usize,
    panels: Panels,
}

/// Where a [`PackedA`] keeps its panels.
enum Panels {
    /// Its own allocation, for an operand kept across calls.
    Owned(Vec<f32>),
    /// This thread's reusable call buffer, for an operand packed for one call: a fresh
    /// allocation would be zero-filled (and faulted in) only to be overwritten.
    Loaned(buffer::PackBuf),
}

impl std::fmt::Debug for Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, len) = match self {
            Panels::Owned(v) => ("owned", v.len()),
            Panels::Loaned(b) => ("loaned", b.as_slice().len()),
        };
        write!(f, "Panels({kind}, {len} floats)")
    }
}

impl Drop for Panels {
    /// Weights packed for one forward (training repacks every step) go back to the pool.
    fn drop(&mut self) {
        if let Panels::Owned(v) = self {
            super::buffers::recycle(std::mem::take(v));
        }
    }
}

impl Panels {
    fn as_slice(&self) -> &[f32] {
        match self {
            Panels::Owned(v) => v,
            Panels::Loaned(b) => b.as_slice(),
        }
    }
}

impl PackedA {
    /// Rows per panel: a packed operand can only be cut at multiples of this.
    pub fn panel_rows(&self) -> usize {
        self.mr
    }
    /// Rows of the packed matrix.
    pub fn rows(&self) -> usize {
        self.m
    }
    /// The reduction length k.
    pub fn depth(&self) -> usize {
        self.k
    }
    /// The SIMD level it was packed for (the one it must be used with).
    pub fn level(&self) -> SimdLevel {
        self.level
    }
}

/// The SIMD level whose kernel `level` actually runs on this CPU (a level the CPU lacks falls
/// back, as [`sgemm`] does).
fn kernel_level(level: SimdLevel) -> SimdLevel {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if is_x86_feature_detected!("avx512f") => SimdLevel::Avx512,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 | SimdLevel::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
            SimdLevel::Avx2
        }
        _ => SimdLevel::Portable,
    }
}

/// Rows per A panel of `level`'s kernel.
pub fn panel_rows(level: SimdLevel) -> usize {
    match kernel_level(level) {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => <kernel_avx512::Avx512 as driver::MicroKernel>::MR,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => <kernel_avx2::Avx2 as driver::MicroKernel>::MR,
        _ => <kernel_portable::Portable as driver::MicroKernel>::MR,
    }
}

/// Packs A (`m x k`, m, k > 0) for repeated products with `level`'s kernel, into memory of its
/// own (to keep across calls).
pub fn pack_a(level: SimdLevel, m: usize, k: usize, a: MatRef<'_>) -> PackedA {
    // Packing writes every float, padding included, so a recycled buffer needs no clearing.
    pack_a_into(level, m, k, a, |len| Panels::Owned(super::buffers::uninit(len)))
}

/// [`pack_a`] into this thread's reusable call buffer, for the products of one call (a
/// convolution's tasks sharing its weights); the buffer goes back when the result is dropped.
pub fn pack_a_for_call(level: SimdLevel, m: usize, k: usize, a: MatRef<'_>) -> PackedA {
    pack_a_into(level, m, k, a, |len| Panels::Loaned(buffer::PackBuf::take(buffer::Slot::Call, len)))
}

fn pack_a_into(level: SimdLevel, m: usize, k: usize, a: MatRef<'_>, alloc: impl FnOnce(usize) -> Panels) -> PackedA {
    assert!(m > 0 && k > 0, "pack_a: empty operand");
    a.check("A", m, k);
    let level = kernel_level(level);
    let mr = panel_rows(level);
    let mut panels = alloc(m.div_ceil(mr) * mr * k);
    let dst = match &mut panels {
        Panels::Owned(v) => v.as_mut_slice(),
        Panels::Loaned(b) => b.as_mut_slice(),
    };
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kernel_level` only answers AVX-512 where AVX-512F was detected.
        SimdLevel::Avx512 => unsafe { driver::pack_whole_a::<kernel_avx512::Avx512>(m, k, a, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kernel_level` only answers AVX2 where AVX2 and FMA were detected.
        SimdLevel::Avx2 => unsafe { driver::pack_whole_a::<kernel_avx2::Avx2>(m, k, a, dst) },
        // SAFETY: the portable kernel needs no CPU feature.
        _ => unsafe { driver::pack_whole_a::<kernel_portable::Portable>(m, k, a, dst) },
    };
    PackedA { level, mr, m, k, panels }
}

/// C[m x n] = A[m x k] * B[k x n] + beta * C, then `epilogue`, with A given as a matrix or
/// pre-packed. Panics only on slices too short for the sizes or a packed A used with another
/// level, row range or k than it was made for (internal invariants of the callers).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    level: SimdLevel,
    m: usize,
    n: usize,
    k: usize,
    a: AOperand<'_>,
    b: BOperand<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    epilogue: &Epilogue<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    // These checks are what make the kernels' raw-pointer stores into C sound: every tile they
    // write lies inside `c[..(m - 1) * ldc + n]`.
    assert!(ldc >= n, "sgemm: ldc = {ldc} < n = {n}");
    let c_needed = (m - 1) * ldc + n;
    assert!(c.len() >= c_needed, "sgemm: C has {} elements, needs {c_needed}", c.len());
    epilogue.check(m, n);
    if k == 0 {
        scale_c(m, n, beta, c, ldc);
        driver::apply_epilogue_rows(epilogue, c, ldc, m, n);
        return;
    }
    let level = kernel_level(level);
    let a = match a {
        AOperand::Matrix(a) => {
            a.check("A", m, k);
            driver::ASource::Matrix(a)
        }
        AOperand::Packed { packed, first_row } => {
            assert!(packed.level == level, "sgemm: A packed for {:?}, used with {level:?}", packed.level);
            assert!(
                packed.k == k && first_row % packed.mr == 0 && first_row + m <= packed.m,
                "sgemm: packed A mismatch"
            );
            driver::ASource::Packed {
                data: packed.panels.as_slice(),
                total_panels: packed.m.div_ceil(packed.mr),
                first_panel: first_row / packed.mr,
            }
        }
    };
    if let BOperand::Matrix(b) = b {
        b.check("B", k, n);
    }
    let problem = driver::Problem { m, n, k, a, b, beta, ldc, epilogue: *epilogue };
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kernel_level` only answers AVX-512 where AVX-512F was detected.
        SimdLevel::Avx512 => unsafe { driver::gemm::<kernel_avx512::Avx512>(&problem, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kernel_level` only answers AVX2 where AVX2 and FMA were detected.
        SimdLevel::Avx2 => unsafe { driver::gemm::<kernel_avx2::Avx2>(&problem, c) },
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
