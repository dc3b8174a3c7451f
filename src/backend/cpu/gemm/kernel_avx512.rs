//! AVX-512F micro-kernel: a 14 x 32 tile of C in 28 zmm accumulators.
//!
//! Per k step it loads two zmm of B and issues 28 FMAs whose A operand is a broadcast straight
//! from memory (`vfmadd231ps zmm, zmm, [mem]{1to16}`), so 30 of the 32 registers are in use and
//! the two FMA ports never wait on a shuffle. Edge tiles use masked loads/stores: the packed
//! panels are zero-padded, so the kernel always computes the full tile and only the store is cut.

use std::arch::x86_64::*;

use super::driver::MicroKernel;
use super::pack::{pack_panel, StripSource};

const MR: usize = 14;
const NR: usize = 32;

/// The AVX-512F kernel.
pub(super) struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    // A micro-panel 14 x 256 x 4 B = 14 KiB in L1; B micro-panels of 32 KiB stream past it.
    const KC: usize = 256;
    const MB: usize = 14 * 12;
    // B block 256 x 512 x 4 B = 512 KiB: comfortably inside a 2 MiB L2.
    const NB: usize = 512;

    fn pack_a(dst: &mut [f32], src: StripSource<'_>, i0: usize, rows: usize, p0: usize, kc: usize) {
        pack_panel::<MR>(dst, src, i0, rows, p0, kc);
    }

    fn pack_b(dst: &mut [f32], src: StripSource<'_>, j0: usize, cols: usize, p0: usize, kc: usize) {
        pack_panel::<NR>(dst, src, j0, cols, p0, kc);
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

/// See [`MicroKernel::tile`].
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
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // SAFETY: the caller guarantees `kc * MR` floats at `a` and `kc * NR` at `b`; step p reads
    // a[p * MR .. p * MR + MR] and b[p * NR .. p * NR + NR].
    unsafe {
        for p in 0..kc {
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
    for (r, acc_r) in acc.iter().enumerate().take(rows) {
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
        let out = if beta == 0.0 {
            v
        } else {
            _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, dst), v)
        };
        _mm512_mask_storeu_ps(dst, mask, out);
    }
}
