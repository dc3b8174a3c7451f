//! The GEMM driver: cache blocking, packing and the split of C into tiles spread over rayon's
//! global pool.
//!
//! A is packed once, up front (in parallel), into a buffer shared by all tiles. Each tile of C
//! (`rows x cols` in panels) then runs:
//! ```text
//! for each k block (KC)             C tile accumulates across blocks (beta only on the first)
//!   pack the tile's KC x cols block of B into this thread's buffer: it stays in L2
//!   for each A panel (MR rows)      its MR x KC micro-panel stays in L1 ...
//!     for each B panel (NR cols)    ... while the KC x NR micro-panels stream from L2
//!       micro-kernel
//! ```
//! Tiles are preferably whole columns of C (all rows), so no B block is packed twice; rows are cut
//! only when there are too few columns to share. Tasks never wait on each other (no barrier), so
//! a call nested inside another rayon task cannot deadlock and tiles can be stolen freely for
//! load balance on a busy machine.

use std::ops::Range;

use rayon::prelude::*;

use super::buffer::{PackBuf, Slot};
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
    /// Target columns of C per task tile (a multiple of NR): the `KC x NB` block of B reused by
    /// every A panel of the tile should fit in L2.
    const NB: usize;

    /// Packs k indices `p0 .. p0 + kc` of the A rows from `i0` on into consecutive `MR`-row
    /// micro-panels of `kc * MR` floats (as many as `dst` holds; rows from `m` on read as zero).
    fn pack_a(dst: &mut [f32], src: StripSource<'_>, i0: usize, m: usize, p0: usize, kc: usize);

    /// Packs k indices `p0 .. p0 + kc` of the B columns from `j0` on into consecutive
    /// `NR`-column micro-panels of `kc * NR` floats (columns from `n` on read as zero).
    fn pack_b(dst: &mut [f32], src: StripSource<'_>, j0: usize, n: usize, p0: usize, kc: usize);

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
/// The CPU supports the instructions `K` uses.
pub(super) unsafe fn gemm<K: MicroKernel>(p: &Problem<'_>, c: &mut [f32]) {
    let (m, n, k) = (p.m, p.n, p.k);
    // The tile stores go through raw pointers; this bound is what keeps them inside `c`.
    assert!(m > 0 && n > 0 && k > 0 && p.ldc >= n && c.len() >= (m - 1) * p.ldc + n);
    let m_panels = m.div_ceil(K::MR);
    let n_panels = n.div_ceil(K::NR);
    let parallel = 2 * m * n * k >= PARALLEL_MIN_FLOPS && rayon::current_num_threads() > 1;
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    // Equal k blocks (e.g. 576 = 3 x 192, not 256 + 256 + 64) keep every kernel call long.
    let kc_max = k.div_ceil(k.div_ceil(K::KC));

    let mut a_buf = PackBuf::take(Slot::SharedA, m_panels * K::MR * k);
    let pa = a_buf.as_mut_slice();
    pack_a::<K>(pa, StripSource::rows_of_a(p.a), m, k, kc_max, parallel);
    let pa = &*pa;

    let (row_tiles, col_tiles) = plan_tiles::<K>(m_panels, n_panels, threads);
    let cptr = CPtr(c.as_mut_ptr());
    let run = |t: usize| {
        let rows = split(t / col_tiles, row_tiles, m_panels);
        let cols = split(t % col_tiles, col_tiles, n_panels);
        // SAFETY: the CPU supports `K` (our caller's contract); tiles of the grid are disjoint,
        // so no two tasks write the same element of C; `c` outlives the parallel section.
        unsafe { compute_tile::<K>(pa, p, kc_max, rows, cols, cptr.get()) }
    };
    let tiles = row_tiles * col_tiles;
    if parallel && tiles > 1 {
        (0..tiles).into_par_iter().for_each(run);
    } else {
        (0..tiles).for_each(run);
    }
}

/// Packs all of A (`m` rows), k block after k block (`kc_max` long, the last maybe shorter);
/// inside a block, `MR`-row micro-panel after micro-panel, so the panels a tile walks through for
/// one k block are adjacent. (Panel-major storage over the whole of k would put them a power of
/// two apart for power-of-two k, all in the same cache sets.)
fn pack_a<K: MicroKernel>(
    dst: &mut [f32],
    src: StripSource<'_>,
    m: usize,
    k: usize,
    kc_max: usize,
    parallel: bool,
) {
    let panels = m.div_ceil(K::MR);
    // Panels are packed in groups about 256 rows tall: long sequential runs when a source row
    // feeds all the group's panels, and few enough tasks that scheduling costs nothing.
    let group_panels = 256usize.div_ceil(K::MR);
    let mut rest = dst;
    let mut p0 = 0;
    while p0 < k {
        let kc = kc_max.min(k - p0);
        let (block, tail) = rest.split_at_mut(panels * K::MR * kc);
        rest = tail;
        let job = |(i, group): (usize, &mut [f32])| {
            K::pack_a(group, src, i * group_panels * K::MR, m, p0, kc)
        };
        let group_len = group_panels * K::MR * kc;
        if parallel {
            block.par_chunks_mut(group_len).enumerate().for_each(job);
        } else {
            block.chunks_mut(group_len).enumerate().for_each(job);
        }
        p0 += kc;
    }
}

/// Part `i` of `parts` near-equal parts of `0..total`.
fn split(i: usize, parts: usize, total: usize) -> Range<usize> {
    i * total / parts..(i + 1) * total / parts
}

/// How many tile rows and columns to cut C into. Tiles start as full-height column strips of
/// about `NB` columns. With several threads, tiles are cut further until they divide evenly among
/// the threads (or are numerous enough that work stealing evens them out): narrower strips while
/// they stay at least `MIN_TILE_PANELS` panels wide, otherwise shorter ones, which costs packing
/// the same B block once per tile row.
fn plan_tiles<K: MicroKernel>(m_panels: usize, n_panels: usize, threads: usize) -> (usize, usize) {
    const MIN_TILE_PANELS: usize = 4;
    let mut rt = 1;
    let mut ct = n_panels.div_ceil(K::NB / K::NR);
    if threads <= 1 {
        return (rt, ct);
    }
    loop {
        let tiles = rt * ct;
        if tiles % threads == 0 || tiles >= 8 * threads {
            return (rt, ct);
        }
        if (ct + 1) * MIN_TILE_PANELS <= n_panels {
            ct += 1;
        } else if rt < m_panels {
            rt += 1;
        } else if ct < n_panels {
            ct += 1;
        } else {
            return (rt, ct);
        }
    }
}

/// Computes the C tile made of A panels `rows` and B panels `cols`.
///
/// # Safety
/// The CPU supports `K`; `pa` holds A packed by [`pack_a`]; `c` points at C as checked in
/// [`gemm`] and no one else accesses this tile meanwhile.
unsafe fn compute_tile<K: MicroKernel>(
    pa: &[f32],
    p: &Problem<'_>,
    kc_max: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    c: *mut f32,
) {
    let m_panels = p.m.div_ceil(K::MR);
    let mut b_buf = PackBuf::take(Slot::TileB, cols.len() * K::NR * kc_max);
    let b_src = StripSource::cols_of_b(p.b);
    let mut pc = 0;
    while pc < p.k {
        let kc = kc_max.min(p.k - pc);
        let b_block = &mut b_buf.as_mut_slice()[..cols.len() * K::NR * kc];
        K::pack_b(b_block, b_src, cols.start * K::NR, p.n, pc, kc);
        let a_block = &pa[pc * m_panels * K::MR..];
        // beta applies once; later k blocks add onto what the first one stored.
        let beta = if pc == 0 { p.beta } else { 1.0 };
        for ip in rows.clone() {
            let i0 = ip * K::MR;
            let a = &a_block[ip * K::MR * kc..][..kc * K::MR];
            for (jl, b) in b_block.chunks_exact(K::NR * kc).enumerate() {
                let j0 = (cols.start + jl) * K::NR;
                // SAFETY: `a`/`b` hold exactly the kc * MR and kc * NR floats the kernel reads.
                // The tile's top-left element (i0, j0) has i0 < m and j0 < n, and it spans at
                // most `m - i0` rows and `n - j0` columns, all inside the C region checked in
                // `gemm`; tiles are disjoint across tasks (our contract); the CPU supports `K`.
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
