//! AVX2 + FMA micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators.
//!
//! With 16 ymm registers: 12 accumulators, two B vectors and one broadcast of A. Edge tiles
//! (fewer than 16 columns) go through a small scratch row: simpler than building `vmaskmovps`
//! masks, and edge tiles are a small fraction of the work.

use std::arch::x86_64::*;

use super::driver::MicroKernel;
use super::pack::{pack_panels, StripSource};

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

/// [`pack_panels`] compiled for AVX2: whole-ymm copies.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
unsafe fn pack<const W: usize>(dst: &mut [f32], src: StripSource<'_>, w0: usize, extent: usize, p0: usize, kc: usize) {
    pack_panels::<W>(dst, src, w0, extent, p0, kc);
}

/// See [`MicroKernel::tile`].
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
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // SAFETY: the caller guarantees `kc * MR` floats at `a` and `kc * NR` at `b`; step p reads
    // a[p * MR .. p * MR + MR] and b[p * NR .. p * NR + NR].
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
    for (r, acc_r) in acc.iter().enumerate().take(rows) {
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
