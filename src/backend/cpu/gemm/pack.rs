//! Packing: copying a `W`-wide strip of an operand, for one block of k, into the k-major panel
//! format the micro-kernels read, `panel[p * W + w]`, zero-padded past the matrix edge so kernels
//! never branch on it.
//!
//! A panel of A is `W = MR` consecutive rows of A; a panel of B is `W = NR` consecutive columns
//! of B. Both layouts of both operands reduce to one of two access patterns, which is why
//! transposed operands cost nothing beyond the pack.
//!
//! The functions are `inline(always)` so that each kernel's `target_feature` wrapper compiles
//! them with its own vector width.

use super::{Layout, MatRef};

/// An operand seen as a set of strips: element (w, p) is row/column `w` of the strip direction
/// and index `p` along k.
#[derive(Clone, Copy)]
pub(super) struct StripSource<'a> {
    pub(super) data: &'a [f32],
    pub(super) ld: usize,
    /// True when consecutive `w` are adjacent in memory (`data[p * ld + w]`), false when
    /// consecutive `p` are (`data[w * ld + p]`).
    pub(super) w_contiguous: bool,
}

impl<'a> StripSource<'a> {
    /// A (m x k) cut into row strips: w = i.
    pub(super) fn rows_of_a(a: MatRef<'a>) -> Self {
        StripSource { data: a.data, ld: a.ld, w_contiguous: a.layout == Layout::Transposed }
    }

    /// B (k x n) cut into column strips: w = j.
    pub(super) fn cols_of_b(b: MatRef<'a>) -> Self {
        StripSource { data: b.data, ld: b.ld, w_contiguous: b.layout == Layout::Normal }
    }
}

/// Packs consecutive panels, for k indices `p0 .. p0 + kc`: `dst` holds a whole number of
/// `kc * W` panels, the first one starting at strip `w0`; strips at or past `extent` (only in the
/// last panel of the operand) are zero-filled.
#[inline(always)]
pub(super) fn pack_panels<const W: usize>(
    dst: &mut [f32],
    src: StripSource<'_>,
    w0: usize,
    extent: usize,
    p0: usize,
    kc: usize,
) {
    pack_panels_with::<W>(dst, src, w0, extent, p0, kc, pack_strided::<W>);
}

/// [`pack_panels`] with strided sources packed panel by panel by `strided(panel, src, w0, width,
/// p0, kc)`: a kernel's register-transposing form of [`pack_strided`].
#[inline(always)]
pub(super) fn pack_panels_with<const W: usize>(
    dst: &mut [f32],
    src: StripSource<'_>,
    w0: usize,
    extent: usize,
    p0: usize,
    kc: usize,
    strided: impl Fn(&mut [f32], StripSource<'_>, usize, usize, usize, usize),
) {
    if src.w_contiguous {
        pack_contiguous::<W>(dst, src, w0, extent, p0, kc);
    } else {
        for (i, panel) in dst.chunks_exact_mut(kc * W).enumerate() {
            let start = w0 + i * W;
            strided(panel, src, start, (extent - start).min(W), p0, kc);
        }
    }
}

/// Element (w, p) at `p * ld + w`. Walks the source row by row, each row contributing `W` floats
/// to every panel of the group: reading a whole row segment sequentially keeps the hardware
/// prefetcher busy, where filling one panel at a time would jump a full row stride (often a page)
/// for every 14 or 32 floats.
#[inline(always)]
fn pack_contiguous<const W: usize>(
    dst: &mut [f32],
    src: StripSource<'_>,
    w0: usize,
    extent: usize,
    p0: usize,
    kc: usize,
) {
    let panel_len = kc * W;
    let width = (extent - w0).min(dst.len() / W / kc * W);
    for p in 0..kc {
        let start = (p0 + p) * src.ld + w0;
        // Rows are usually far apart (a page or more), which the hardware prefetchers do not
        // follow: request the row a few steps ahead explicitly.
        if p + ROW_PREFETCH < kc {
            let ahead = start + ROW_PREFETCH * src.ld;
            for line in (ahead..ahead + width).step_by(16) {
                prefetch(&src.data[line]);
            }
        }
        let row = &src.data[start..start + width];
        for (i, strip) in row.chunks(W).enumerate() {
            let out = &mut dst[i * panel_len + p * W..][..W];
            if strip.len() == W {
                // Constant length: the copy compiles to a few vector moves.
                out.copy_from_slice(strip);
            } else {
                out[..strip.len()].copy_from_slice(strip);
                out[strip.len()..].fill(0.0);
            }
        }
    }
}

/// How many source rows ahead [`pack_contiguous`] prefetches.
const ROW_PREFETCH: usize = 4;

/// Hints that the cache line holding `v` will be read soon.
#[inline(always)]
fn prefetch(v: &f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch has no architectural effect and cannot fault; SSE, which it needs,
        // is part of the x86-64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((v as *const f32).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Element (w, p) at `w * ld + p`: a transpose. Done in blocks of `P` k steps so each of the `W`
/// source rows is read as a short contiguous run and the destination block (`P * W` floats) stays
/// in L1 while it is filled.
#[inline(always)]
fn pack_strided<const W: usize>(dst: &mut [f32], src: StripSource<'_>, w0: usize, width: usize, p0: usize, kc: usize) {
    const P: usize = 16;
    for (block, out) in dst.chunks_mut(P * W).enumerate() {
        let pb = block * P;
        let steps = (kc - pb).min(P);
        for w in 0..width {
            let start = (w0 + w) * src.ld + p0 + pb;
            let run = &src.data[start..start + steps];
            for (p, &v) in run.iter().enumerate() {
                out[p * W + w] = v;
            }
        }
        if width < W {
            for row in out.chunks_exact_mut(W) {
                row[width..].fill(0.0);
            }
        }
    }
}
