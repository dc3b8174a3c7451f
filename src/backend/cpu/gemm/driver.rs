//! The GEMM driver: packs both operands once into a reusable buffer, then computes C tile by tile,
//! the tiles spread over rayon's global pool.
//!
//! Loop nest inside one tile of C (`rows x cols` in panels):
//! ```text
//! for each k block (KC)             C tile accumulates across blocks (beta only on the first)
//!   for each A panel (MR rows)      its MR x KC micro-panel stays in L1 ...
//!     for each B panel (NR cols)    ... while KC x NR micro-panels stream from the L2-resident
//!       micro-kernel                    KC x NB block of B
//! ```
//! Packing everything up front (in parallel) rather than per block keeps the threads independent:
//! no barrier is needed, so a call nested inside another rayon task cannot deadlock, and tiles
//! can be stolen freely for load balance on a busy machine.

use std::ops::Range;

use rayon::prelude::*;

use super::buffer::PackBuf;
use super::pack::StripSource;
use super::MatRef;

/// Below this many flops (2mnk) a call runs on the calling thread: a rayon round trip costs a few
/// microseconds, as much as the whole product at this size.
const PARALLEL_MIN_FLOPS: usize = 1 << 21;

/// The arguments of one `sgemm` call, validated (slices long enough, m, n, k > 0).
pub(super) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: MatRef<'a>,
    pub b: MatRef<'a>,
    pub beta: f32,
    pub ldc: usize,
}

/// A register-blocked micro-kernel and the cache blocking tuned for it.
pub(super) trait MicroKernel {
    /// Rows of C per micro-tile (the broadcast dimension).
    const MR: usize;
    /// Columns of C per micro-tile (the vector dimension).
    const NR: usize;
    /// Longest k block: an `MR x KC` A micro-panel should sit in L1 next to one streaming
    /// `KC x NR` B micro-panel.
    const KC: usize;
    /// Target rows of C per task tile (a multiple of MR).
    const MB: usize;
    /// Target columns of C per task tile (a multiple of NR): the `KC x NB` block of B reused by
    /// every A panel of the tile should fit in L2.
    const NB: usize;

    /// Packs rows `i0 .. i0 + rows` of A, k indices `p0 .. p0 + kc`, into one `MR`-row
    /// micro-panel of `kc * MR` floats.
    fn pack_a(dst: &mut [f32], src: StripSource<'_>, i0: usize, rows: usize, p0: usize, kc: usize);

    /// Packs columns `j0 .. j0 + cols` of B, k indices `p0 .. p0 + kc`, into one `NR`-column
    /// micro-panel of `kc * NR` floats.
    fn pack_b(dst: &mut [f32], src: StripSource<'_>, j0: usize, cols: usize, p0: usize, kc: usize);

    /// C tile = A micro-panel * B micro-panel + beta * C tile, storing only the top-left
    /// `rows x cols` of the `MR x NR` result.
    ///
    /// # Safety
    /// The CPU supports the instructions the kernel uses; `a` is readable for `kc * MR` floats,
    /// `b` for `kc * NR`; `c` is valid for reads and writes of `rows` rows of `cols` floats at
    /// stride `ldc`, not accessed by anyone else meanwhile; `1 <= rows <= MR`, `1 <= cols <= NR`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        beta: f32,
    );
}

/// C's base pointer, shared by the tile tasks.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);

// SAFETY: the pointer comes from a `&mut [f32]` held for the whole parallel section, and the
// tasks given a copy write pairwise disjoint tiles of C, so sharing it across threads creates no
// data race.
unsafe impl Send for CPtr {}
// SAFETY: as for `Send`: concurrent users touch disjoint elements only.
unsafe impl Sync for CPtr {}

impl CPtr {
    /// Through a method so closures capture the whole `CPtr` (which is `Sync`), not the raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs the whole product with micro-kernel `K`.
///
/// # Safety
/// The CPU supports the instructions `K` uses. (Slice lengths were checked by the caller and are
/// re-checked here where it matters for soundness.)
pub(super) unsafe fn gemm<K: MicroKernel>(p: &Problem<'_>, c: &mut [f32]) {
    let (m, n, k) = (p.m, p.n, p.k);
    // The tile stores below go through raw pointers; this bound is what keeps them inside `c`.
    assert!(p.ldc >= n && c.len() >= (m - 1) * p.ldc + n);
    let m_panels = m.div_ceil(K::MR);
    let n_panels = n.div_ceil(K::NR);
    // Round A up to whole cache lines so B's panels start 64-byte aligned too.
    let a_len = (m_panels * K::MR * k).next_multiple_of(16);
    let b_len = n_panels * K::NR * k;
    let threads = if 2 * m * n * k >= PARALLEL_MIN_FLOPS {
        rayon::current_num_threads()
    } else {
        1
    };

    // Equal k blocks (e.g. 576 = 3 x 192, not 256 + 256 + 64) keep every kernel call long.
    let kc_max = k.div_ceil(k.div_ceil(K::KC));

    let mut buf = PackBuf::take(a_len + b_len);
    let (pa, pb) = buf.as_mut_slice().split_at_mut(a_len);
    let parallel = threads > 1;
    let a_src = StripSource::rows_of_a(p.a);
    pack_operand(
        &mut pa[..m_panels * K::MR * k],
        a_src,
        m,
        K::MR,
        k,
        kc_max,
        parallel,
        K::pack_a,
    );
    pack_operand(
        pb,
        StripSource::cols_of_b(p.b),
        n,
        K::NR,
        k,
        kc_max,
        parallel,
        K::pack_b,
    );
    let (pa, pb) = (&*pa, &*pb);

    let (row_tiles, col_tiles) = plan_tiles::<K>(m_panels, n_panels, threads);
    let cptr = CPtr(c.as_mut_ptr());
    let run = |t: usize| {
        let rows = split(t / col_tiles, row_tiles, m_panels);
        let cols = split(t % col_tiles, col_tiles, n_panels);
        // SAFETY: the CPU supports `K` (our caller's contract); tiles of the grid are disjoint,
        // so no two tasks write the same element of C; `c` outlives the parallel section.
        unsafe { compute_tile::<K>(pa, pb, p, kc_max, rows, cols, cptr.get()) }
    };
    let tiles = row_tiles * col_tiles;
    if parallel && tiles > 1 {
        (0..tiles).into_par_iter().for_each(run);
    } else {
        (0..tiles).for_each(run);
    }
}

/// Signature of [`MicroKernel::pack_a`] and [`MicroKernel::pack_b`].
type PackFn = fn(&mut [f32], StripSource<'_>, usize, usize, usize, usize);

/// Packs one operand (`extent` strips of width `w`) block by block along k, in parallel if asked.
///
/// Layout: k block after k block (`kc_max` long, the last maybe shorter); inside a block,
/// micro-panel after micro-panel. The panels one tile walks through for a given k block are
/// therefore adjacent; panel-major storage over the whole of k would put them a power of two
/// apart for power-of-two k, all in the same cache sets.
#[allow(clippy::too_many_arguments)]
fn pack_operand(
    dst: &mut [f32],
    src: StripSource<'_>,
    extent: usize,
    w: usize,
    k: usize,
    kc_max: usize,
    parallel: bool,
    pack: PackFn,
) {
    let panels = extent.div_ceil(w);
    let mut rest = dst;
    let mut p0 = 0;
    while p0 < k {
        let kc = kc_max.min(k - p0);
        let (block, tail) = rest.split_at_mut(panels * w * kc);
        rest = tail;
        let job = |(i, panel): (usize, &mut [f32])| {
            let w0 = i * w;
            pack(panel, src, w0, (extent - w0).min(w), p0, kc);
        };
        if parallel {
            // Several panels per task so the scheduling cost stays small next to the copying.
            let min_len = (1 << 14) / (w * kc) + 1;
            block
                .par_chunks_mut(w * kc)
                .enumerate()
                .with_min_len(min_len)
                .for_each(job);
        } else {
            block.chunks_mut(w * kc).enumerate().for_each(job);
        }
        p0 += kc;
    }
}

/// Part `i` of `parts` near-equal parts of `0..total`.
fn split(i: usize, parts: usize, total: usize) -> Range<usize> {
    i * total / parts..(i + 1) * total / parts
}

/// How many tile rows and columns to cut C into. Starts from the cache-friendly tile size, then,
/// when several threads share the work, cuts further until the tiles divide evenly among the
/// threads (or are numerous enough that work stealing evens them out), splitting whichever side
/// of the tiles is longer.
fn plan_tiles<K: MicroKernel>(m_panels: usize, n_panels: usize, threads: usize) -> (usize, usize) {
    let mut rt = m_panels.div_ceil(K::MB / K::MR);
    let mut ct = n_panels.div_ceil(K::NB / K::NR);
    if threads <= 1 {
        return (rt, ct);
    }
    loop {
        let tiles = rt * ct;
        if tiles % threads == 0 || tiles >= 8 * threads {
            return (rt, ct);
        }
        let tile_rows = m_panels * K::MR / rt;
        let tile_cols = n_panels * K::NR / ct;
        let can_rows = rt < m_panels;
        let can_cols = ct < n_panels;
        if can_rows && (tile_rows >= tile_cols || !can_cols) {
            rt += 1;
        } else if can_cols {
            ct += 1;
        } else {
            return (rt, ct);
        }
    }
}

/// Computes the C tile made of A panels `rows` and B panels `cols`.
///
/// # Safety
/// The CPU supports `K`; `pa`/`pb` hold the packed operands of `p`; `c` points at C as checked in
/// [`gemm`] and no one else accesses this tile meanwhile.
unsafe fn compute_tile<K: MicroKernel>(
    pa: &[f32],
    pb: &[f32],
    p: &Problem<'_>,
    kc_max: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    c: *mut f32,
) {
    let (m_panels, n_panels) = (p.m.div_ceil(K::MR), p.n.div_ceil(K::NR));
    let mut pc = 0;
    while pc < p.k {
        let kc = kc_max.min(p.k - pc);
        // The k block starting at pc, as laid out by `pack_operand`.
        let (a_block, b_block) = (&pa[pc * m_panels * K::MR..], &pb[pc * n_panels * K::NR..]);
        // beta applies once; later k blocks add onto what the first one stored.
        let beta = if pc == 0 { p.beta } else { 1.0 };
        for ip in rows.clone() {
            let i0 = ip * K::MR;
            let a = &a_block[ip * K::MR * kc..][..kc * K::MR];
            for jp in cols.clone() {
                let j0 = jp * K::NR;
                let b = &b_block[jp * K::NR * kc..][..kc * K::NR];
                // SAFETY: `a`/`b` were sliced to exactly what the kernel reads. The tile's
                // top-left element (i0, j0) has i0 < m and j0 < n, and it spans at most
                // `m - i0` rows and `n - j0` columns, all inside the C region checked in `gemm`;
                // tiles are disjoint across tasks (our contract); the CPU supports `K`.
                unsafe {
                    K::tile(
                        kc,
                        a.as_ptr(),
                        b.as_ptr(),
                        c.add(i0 * p.ldc + j0),
                        p.ldc,
                        (p.m - i0).min(K::MR),
                        (p.n - j0).min(K::NR),
                        beta,
                    );
                }
            }
        }
        pc += kc;
    }
}
