//! Portable micro-kernel in plain Rust: a 6 x 8 tile of C, written so the compiler keeps the
//! accumulators in registers and vectorises the 8-wide rows (two SSE or NEON registers each, 12
//! in all, which fits both x86-64's 16 xmm and aarch64's 32 v registers).

use super::driver::MicroKernel;
use super::pack::{pack_panels, StripSource};

const MR: usize = 6;
const NR: usize = 8;

/// The portable kernel, for CPUs without AVX2 and for targets other than x86-64.
pub(super) struct Portable;

impl MicroKernel for Portable {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    const NB: usize = 256;
    const MB: usize = 6 * 64;

    fn pack_a(dst: &mut [f32], src: StripSource<'_>, i0: usize, m: usize, p0: usize, kc: usize) {
        pack_panels::<MR>(dst, src, i0, m, p0, kc);
    }

    fn pack_b(dst: &mut [f32], src: StripSource<'_>, j0: usize, n: usize, p0: usize, kc: usize) {
        pack_panels::<NR>(dst, src, j0, n, p0, kc);
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
        // SAFETY: the caller guarantees `kc * MR` readable floats at `a` and `kc * NR` at `b`,
        // not written meanwhile (they are the packed buffers, shared read-only).
        let (a, b) = unsafe { (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR)) };
        let acc = multiply(a, b);
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            // SAFETY: row r < rows of the tile is valid for `cols` floats and no one else
            // accesses it during the call (caller's contract).
            let out = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
            for (o, &x) in out.iter_mut().zip(acc_r) {
                *o = if beta == 0.0 { x } else { x + beta * *o };
            }
        }
    }
}

/// The full `MR x NR` product of two packed micro-panels.
#[inline(always)]
fn multiply(a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (acc_r, &ar) in acc.iter_mut().zip(ap) {
            for (x, &bv) in acc_r.iter_mut().zip(bp) {
                *x += ar * bv;
            }
        }
    }
    acc
}
