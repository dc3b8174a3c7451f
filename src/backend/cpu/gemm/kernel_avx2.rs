//! AVX2 + FMA micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators.
//!
//! With 16 ymm registers: 12 accumulators, two B vectors and one broadcast of A. Edge tiles
//! (fewer than 16 columns) go through a small scratch row: simpler than building `vmaskmovps`
//! masks, and edge tiles are a small fraction of the work.

use std::arch::x86_64::*;

use super::driver::MicroKernel;
use super::pack::{pack_panels, pack_panels_with, StripSource};

const MR: usize = 6;
const NR: usize = 16;

/// The AVX2 + FMA kernel.
pub(super) struct Avx2;

impl MicroKernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    // A micro-panel 6 x 256 x 4 B = 6 KiB, B micro-panels 16 KiB: both well inside L1.
    const KC: usize = 256;
    const NB: usize = 512;
    const MB: usize = 6 * 96;

    fn pack_a(dst: &mut [f32], src: StripSource<'_>, i0: usize, m: usize, p0: usize, kc: usize) {
        // SAFETY: this kernel is only used once AVX2 and FMA have been detected (see `sgemm`).
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
        // SAFETY: forwarded contract: the CPU has AVX2 and FMA and the pointers cover the tile.
        unsafe { kernel(kc, a, b, c, ldc, rows, cols, beta) }
    }
}

/// [`pack_panels`] compiled for AVX2 (whole-ymm copies), except that strided sources are
/// transposed 8 x 8 in registers instead of element by element when the panel width is a
/// multiple of 8 (B's panels; A's 6-row panels keep the element loop).
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn pack<const W: usize>(dst: &mut [f32], src: StripSource<'_>, w0: usize, extent: usize, p0: usize, kc: usize) {
    if !W.is_multiple_of(8) {
        pack_panels::<W>(dst, src, w0, extent, p0, kc);
        return;
    }
    pack_panels_with::<W>(dst, src, w0, extent, p0, kc, |panel, src, w0, width, p0, kc| {
        pack_strided::<W>(panel, src, w0, width, p0, kc)
    });
}

/// Packs strips `w0 .. w0 + width` (zero past `width`), k indices `p0 .. p0 + kc`, of a source
/// whose element (w, p) is at `w * ld + p`, into `dst[p * W + w]`: 8 strips by 8 k steps at a
/// time are loaded as rows, transposed in registers and stored as k-step vectors. `W` is a
/// multiple of 8.
#[target_feature(enable = "avx2")]
fn pack_strided<const W: usize>(dst: &mut [f32], src: StripSource<'_>, w0: usize, width: usize, p0: usize, kc: usize) {
    // These two checks make every access below in bounds.
    let dst = &mut dst[..kc * W];
    let last = (w0 + width - 1) * src.ld + p0 + kc;
    assert!(W.is_multiple_of(8) && width >= 1 && width <= W && last <= src.data.len());
    for pb in (0..kc).step_by(8) {
        let steps = (kc - pb).min(8);
        let pmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(steps as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for g in 0..W / 8 {
            let mut rows = [_mm256_setzero_ps(); 8];
            for (i, row) in rows.iter_mut().enumerate().take(width.saturating_sub(g * 8)) {
                let at = src.data.as_ptr().wrapping_add((w0 + g * 8 + i) * src.ld + p0 + pb);
                // SAFETY: lanes 0..steps read data[at .. at + steps] (as an offset), and
                // at + steps <= `last`, checked above; masked-off lanes are not accessed.
                *row = unsafe {
                    if steps == 8 {
                        _mm256_loadu_ps(at)
                    } else {
                        _mm256_maskload_ps(at, pmask)
                    }
                };
            }
            let cols = transpose8(rows);
            for (p, col) in cols.iter().enumerate().take(steps) {
                let at = (pb + p) * W + g * 8;
                // SAFETY: dst[at .. at + 8] lies inside dst[(pb + p) * W .. (pb + p + 1) * W]
                // (g * 8 + 8 <= W) with pb + p < kc, within `dst`.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(at), *col) };
            }
        }
    }
}

/// Transposes an 8 x 8 block held as 8 row vectors: output vector i holds lane i of every input
/// row. Pairs of rows interleaved, 4 x 4 blocks within each 128-bit half, then the halves swapped.
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let mut t = [_mm256_setzero_ps(); 8];
    for i in 0..4 {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm256_setzero_ps(); 8];
    for q in 0..2 {
        let (a, b, c, d) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
        u[4 * q] = _mm256_shuffle_ps::<0x44>(a, c);
        u[4 * q + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
        u[4 * q + 2] = _mm256_shuffle_ps::<0x44>(b, d);
        u[4 * q + 3] = _mm256_shuffle_ps::<0xEE>(b, d);
    }
    let mut out = [_mm256_setzero_ps(); 8];
    for j in 0..4 {
        out[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j]);
        out[4 + j] = _mm256_permute2f128_ps::<0x31>(u[j], u[4 + j]);
    }
    out
}

/// See [`MicroKernel::tile`]. Dispatches on the tile's row count, so an edge tile of a few rows
/// (C_out = 32 is 6 x 5 + 2 rows, DenseNet's growth convolutions) costs its own rows' FMAs
/// instead of a full tile's.
#[target_feature(enable = "avx2,fma")]
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
    by_rows!(1 2 3 4 5 6)
}

/// The tile's first `R` rows (of a panel packed `MR` rows wide).
///
/// # Safety
/// As [`MicroKernel::tile`] with `rows == R <= MR`.
#[target_feature(enable = "avx2,fma")]
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
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: the caller guarantees `kc * MR` floats at `a` and `kc * NR` at `b`; step p reads
    // a[p * MR .. p * MR + R] and b[p * NR .. p * NR + NR].
    unsafe {
        for p in 0..kc {
            let ap = a.add(p * MR);
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let ar = _mm256_broadcast_ss(&*ap.add(r));
                acc_r[0] = _mm256_fmadd_ps(ar, b0, acc_r[0]);
                acc_r[1] = _mm256_fmadd_ps(ar, b1, acc_r[1]);
            }
        }
    }
    let vbeta = _mm256_set1_ps(beta);
    for (r, acc_r) in acc.iter().enumerate() {
        // SAFETY: row r < rows of the tile is writable for `cols` floats (caller's contract); the
        // full-width path runs only when cols == NR.
        unsafe {
            let row = c.add(r * ldc);
            if cols == NR {
                let (mut lo, mut hi) = (acc_r[0], acc_r[1]);
                if beta != 0.0 {
                    lo = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(row), lo);
                    hi = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(row.add(8)), hi);
                }
                _mm256_storeu_ps(row, lo);
                _mm256_storeu_ps(row.add(8), hi);
            } else {
                let mut scratch = [0.0f32; NR];
                _mm256_storeu_ps(scratch.as_mut_ptr(), acc_r[0]);
                _mm256_storeu_ps(scratch.as_mut_ptr().add(8), acc_r[1]);
                let out = std::slice::from_raw_parts_mut(row, cols);
                store_scalar(out, &scratch[..cols], beta);
            }
        }
    }
}

/// out = v + beta * out (just v when beta == 0).
fn store_scalar(out: &mut [f32], v: &[f32], beta: f32) {
    for (o, &x) in out.iter_mut().zip(v) {
        *o = if beta == 0.0 { x } else { x + beta * *o };
    }
}
