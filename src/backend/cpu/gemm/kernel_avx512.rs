//! AVX-512F micro-kernel: a 14 x 32 tile of C in 28 zmm accumulators.
//!
//! Per k step it loads two zmm of B and issues 28 FMAs whose A operand is a broadcast straight
//! from memory (`vfmadd231ps zmm, zmm, [mem]{1to16}`), so 30 of the 32 registers are in use and
//! the two FMA ports never wait on a shuffle. Edge tiles use masked loads/stores: the packed
//! panels are zero-padded, so an edge tile computes all 32 columns (only the store is cut) but
//! only its own rows (one kernel per row count).

use std::arch::x86_64::*;

use super::driver::MicroKernel;
use super::pack::{pack_panels_with, StripSource};

const MR: usize = 14;
const NR: usize = 32;
/// How many k steps ahead the kernel prefetches B.
const B_PREFETCH: usize = 8;

/// The AVX-512F kernel.
pub(super) struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    // A micro-panel 14 x 256 x 4 B = 14 KiB in L1; B micro-panels of 32 KiB stream past it.
    const KC: usize = 256;
    // B block 256 x 512 x 4 B = 512 KiB: comfortably inside a 2 MiB L2.
    const NB: usize = 512;
    // A block 672 x 256 x 4 B = 672 KiB, also well inside L2.
    const MB: usize = 14 * 48;

    fn pack_a(dst: &mut [f32], src: StripSource<'_>, i0: usize, m: usize, p0: usize, kc: usize) {
        // SAFETY: this kernel is only used once AVX-512F has been detected (see `sgemm`).
        unsafe { pack::<MR>(dst, src, i0, m, p0, kc) }
    }

    fn pack_b(dst: &mut [f32], src: StripSource<'_>, j0: usize, n: usize, p0: usize, kc: usize) {
        // SAFETY: as for `pack_a`.
        unsafe { pack::<NR>(dst, src, j0, n, p0, kc) }
    }

    unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        beta: f32,
    ) {
        // SAFETY: forwarded contract: the CPU has AVX-512F and the pointers cover the tile.
        unsafe { kernel(kc, a, b, c, ldc, rows, cols, beta) }
    }
}

/// [`super::pack::pack_panels`] compiled for AVX-512 (whole-zmm copies), except that strided sources are
/// transposed 16 x 16 in registers instead of element by element.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn pack<const W: usize>(dst: &mut [f32], src: StripSource<'_>, w0: usize, extent: usize, p0: usize, kc: usize) {
    pack_panels_with::<W>(dst, src, w0, extent, p0, kc, |panel, src, w0, width, p0, kc| {
        pack_strided::<W>(panel, src, w0, width, p0, kc)
    });
}

/// Packs strips `w0 .. w0 + width` (zero past `width`), k indices `p0 .. p0 + kc`, of a source
/// whose element (w, p) is at `w * ld + p`, into `dst[p * W + w]`: 16 strips by 16 k steps at a
/// time are loaded as rows, transposed in registers and stored as k-step vectors.
#[target_feature(enable = "avx512f")]
fn pack_strided<const W: usize>(dst: &mut [f32], src: StripSource<'_>, w0: usize, width: usize, p0: usize, kc: usize) {
    // These two checks make every access below in bounds.
    let dst = &mut dst[..kc * W];
    let last = (w0 + width - 1) * src.ld + p0 + kc;
    assert!(width >= 1 && width <= W && last <= src.data.len());
    for pb in (0..kc).step_by(16) {
        let steps = (kc - pb).min(16);
        let pmask = lane_mask(steps);
        for g in 0..W.div_ceil(16) {
            let mut rows = [_mm512_setzero_ps(); 16];
            for (i, row) in rows.iter_mut().enumerate() {
                let w = g * 16 + i;
                if w < width {
                    let at = (w0 + w) * src.ld + p0 + pb;
                    // SAFETY: lanes 0..steps read data[at .. at + steps]; at + steps <= `last`,
                    // checked above; masked-off lanes are not accessed.
                    *row = unsafe { _mm512_maskz_loadu_ps(pmask, src.data.as_ptr().add(at)) };
                }
            }
            let cols = transpose16(rows);
            let out_mask = lane_mask(W - g * 16);
            for (p, col) in cols.iter().enumerate().take(steps) {
                let at = (pb + p) * W + g * 16;
                // SAFETY: the enabled lanes are dst[at .. at + min(16, W - g * 16)], inside
                // dst[(pb + p) * W .. (pb + p + 1) * W] with pb + p < kc, within `dst`.
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(at), out_mask, *col) };
            }
        }
    }
}

/// Transposes a 16 x 16 block held as 16 row vectors: output vector i holds lane i of every
/// input row. Three rounds of in-lane shuffles, then 128-bit lane shuffles.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Interleave pairs of rows: 2 x 2 blocks.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // 4 x 4 blocks inside each 128-bit lane.
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        let (a, b, c, d) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
        u[4 * q] = _mm512_shuffle_ps::<0x44>(a, c);
        u[4 * q + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
        u[4 * q + 2] = _mm512_shuffle_ps::<0x44>(b, d);
        u[4 * q + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
    }
    // Gather the 128-bit lanes: first between row groups 0-3 / 4-7 (and 8-11 / 12-15) ...
    let mut v = [_mm512_setzero_ps(); 16];
    for h in 0..2 {
        for j in 0..4 {
            let (a, b) = (u[8 * h + j], u[8 * h + 4 + j]);
            v[8 * h + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
            v[8 * h + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(a, b);
        }
    }
    // ... then between the two halves.
    let mut out = [_mm512_setzero_ps(); 16];
    for j in 0..8 {
        out[j] = _mm512_shuffle_f32x4::<0x88>(v[j], v[8 + j]);
        out[8 + j] = _mm512_shuffle_f32x4::<0xDD>(v[j], v[8 + j]);
    }
    out
}

/// See [`MicroKernel::tile`]. Dispatches on the tile's row count, so an edge tile of a few rows
/// (C_out = 32 is 14 + 14 + 4 rows, DenseNet's growth convolutions) costs its own rows' FMAs
/// instead of a full tile's.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    beta: f32,
) {
    macro_rules! by_rows {
        ($($r:literal)*) => {
            match rows {
                // SAFETY: forwarded contract; R == rows.
                $($r => unsafe { kernel_rows::<$r>(kc, a, b, c, ldc, cols, beta) },)*
                _ => panic!("micro-kernel tile of {rows} rows (1..={MR})"),
            }
        };
    }
    by_rows!(1 2 3 4 5 6 7 8 9 10 11 12 13 14)
}

/// The tile's first `R` rows (of a panel packed `MR` rows wide).
///
/// # Safety
/// As [`MicroKernel::tile`] with `rows == R <= MR`.
#[target_feature(enable = "avx512f")]
unsafe fn kernel_rows<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    beta: f32,
) {
    // Start fetching the C tile now so the loads after the k loop hit L1. Prefetches never
    // fault, so the tile's possibly-unused tail needs no care.
    for r in 0..R {
        let row = c.wrapping_add(r * ldc).cast::<i8>();
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(4 * NR - 4));
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY: the caller guarantees `kc * MR` floats at `a` and `kc * NR` at `b`; step p reads
    // a[p * MR .. p * MR + R] and b[p * NR .. p * NR + NR].
    unsafe {
        for p in 0..kc {
            // B streams from L2: ask for it a few steps ahead (prefetches never fault).
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((p + B_PREFETCH) * NR).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((p + B_PREFETCH) * NR + 16).cast::<i8>());
            let ap = a.add(p * MR);
            let b0 = _mm512_loadu_ps(b.add(p * NR));
            let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let ar = _mm512_set1_ps(*ap.add(r));
                acc_r[0] = _mm512_fmadd_ps(ar, b0, acc_r[0]);
                acc_r[1] = _mm512_fmadd_ps(ar, b1, acc_r[1]);
            }
        }
    }
    let lo = lane_mask(cols);
    let hi = lane_mask(cols.saturating_sub(16));
    for (r, acc_r) in acc.iter().enumerate() {
        // SAFETY: row r < rows of the tile is writable for `cols` floats (caller's contract), and
        // the masks enable exactly lanes 0..cols: masked-off lanes are neither read nor written.
        unsafe {
            let row = c.add(r * ldc);
            store(row, acc_r[0], lo, beta);
            store(row.add(16), acc_r[1], hi, beta);
        }
    }
}

/// A mask of the first `n.min(16)` lanes.
#[inline(always)]
fn lane_mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// dst[lanes in mask] = v + beta * dst (just v when beta == 0, so NaN in C is not propagated).
///
/// # Safety
/// AVX-512F is available and `dst` is writable for every lane set in `mask`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(dst: *mut f32, v: __m512, mask: __mmask16, beta: f32) {
    if mask == 0 {
        return;
    }
    // SAFETY: masked accesses touch only enabled lanes, which the caller vouches for.
    unsafe {
        let out =
            if beta == 0.0 { v } else { _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, dst), v) };
        _mm512_mask_storeu_ps(dst, mask, out);
    }
}
