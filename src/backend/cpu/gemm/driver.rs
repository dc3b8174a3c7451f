//! The GEMM driver: cache blocking, packing and the split of C into tiles spread over rayon's
//! global pool.
//!
//! One operand is packed once, up front (in parallel), into a buffer shared by all tiles; the
//! other is packed by each tile, one k block at a time, into a per-thread buffer that stays in L2.
//! When A is the shared one (the usual case, n >= m), a tile is a strip of C's columns and runs:
//! ```text
//! for each k block (KC)             C tile accumulates across blocks (beta only on the first)
//!   pack the tile's KC x cols block of B into this thread's buffer (L2)
//!   for each A panel (MR rows)      its MR x KC micro-panel stays in L1 ...
//!     for each B panel (NR cols)    ... while the KC x NR micro-panels stream from L2
//!       micro-kernel
//! ```
//! For tall, narrow products (m > n: e.g. n = 49 for a 7 x 7 feature map) the roles swap: B is
//! shared, a tile is a strip of C's rows and packs its own A blocks, so the big operand A goes
//! through memory once instead of being packed there and read back.
//!
//! Strips are preferably full length, so no local block is packed twice; they are cut across only
//! when there are too few of them to share among the threads. Tasks never wait on each other (no
//! barrier), so a call nested inside another rayon task cannot deadlock and tiles can be stolen
//! freely for load balance on a busy machine.

use std::ops::Range;

use rayon::prelude::*;

use super::super::parallel;
use super::buffer::{PackBuf, Slot};
use super::pack::StripSource;
use super::{BOperand, Epilogue, MatRef};

/// Below this many flops (2mnk) a call runs on the calling thread: a rayon round trip costs a few
/// microseconds, as much as the whole product at this size.
const PARALLEL_MIN_FLOPS: usize = 1 << 21;

/// The arguments of one `sgemm` call, validated (slices long enough, m, n, k > 0).
pub(super) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: ASource<'a>,
    pub b: BOperand<'a>,
    pub beta: f32,
    pub ldc: usize,
    pub epilogue: Epilogue<'a>,
}

/// Where A comes from: a matrix packed during the call, or panels packed earlier by
/// [`pack_whole_a`] (for the same kernel and k).
#[derive(Clone, Copy)]
pub(super) enum ASource<'a> {
    Matrix(MatRef<'a>),
    /// `total_panels` panels per k block, of which this problem uses those from `first_panel` on.
    Packed {
        data: &'a [f32],
        total_panels: usize,
        first_panel: usize,
    },
}

/// Packed panels laid out k block after k block as [`pack_shared`] writes them: `total` panels
/// per block, this problem's panel 0 being panel `first` of each block.
#[derive(Clone, Copy)]
struct Panels<'a> {
    data: &'a [f32],
    total: usize,
    first: usize,
}

impl<'a> Panels<'a> {
    /// The problem's panels for the k block starting at `pc` (`kc` long), panel after panel,
    /// each `w * kc` floats.
    fn block(&self, w: usize, pc: usize, kc: usize) -> &'a [f32] {
        &self.data[pc * self.total * w + self.first * w * kc..]
    }
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
    /// Target columns of C per tile when A is shared (a multiple of NR): the tile's `KC x NB`
    /// block of B, reused by every A panel, should fit in L2.
    const NB: usize;
    /// Target rows of C per tile when B is shared (a multiple of MR): the tile's `MB x KC` block
    /// of A, reused by every B panel, should fit in L2.
    const MB: usize;

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
    let flops = 2usize.saturating_mul(m).saturating_mul(n).saturating_mul(k);
    // Inside a parallel task (a conv's pixel block) the caller is already one of several tasks:
    // splitting again only adds hand-offs, so nested products run on the calling thread.
    let parallel = flops >= PARALLEL_MIN_FLOPS && rayon::current_num_threads() > 1 && parallel::may_split();
    if parallel {
        // From outside the pool, each parallel section (the packing of every k block, then the
        // tiles) would be a cold hand-off: wake the workers, then wake this thread when they
        // finish, tens of microseconds each. On the pool (where a driver already is, it stays)
        // the sections follow each other while the other workers are still awake.
        // SAFETY: forwarded from our caller's contract.
        parallel::run_on_pool(|| unsafe { gemm_planned::<K>(p, c, rayon::current_num_threads()) });
    } else {
        // SAFETY: forwarded from our caller's contract.
        unsafe { gemm_planned::<K>(p, c, 1) };
    }
}

/// [`gemm`] on `threads` threads (1: on the calling thread).
///
/// # Safety
/// The CPU supports the instructions `K` uses.
unsafe fn gemm_planned<K: MicroKernel>(p: &Problem<'_>, c: &mut [f32], threads: usize) {
    let (m, n, k) = (p.m, p.n, p.k);
    let (m_panels, n_panels) = (m.div_ceil(K::MR), n.div_ceil(K::NR));
    let parallel = threads > 1;
    // Equal k blocks (e.g. 576 = 3 x 192, not 256 + 256 + 64) keep every kernel call long.
    let kc_max = k.div_ceil(k.div_ceil(K::KC));
    let prepacked = match p.a {
        ASource::Packed { data, total_panels, first_panel } => {
            Some(Panels { data, total: total_panels, first: first_panel })
        }
        ASource::Matrix(_) => None,
    };
    // A packed beforehand is shared whatever the shape: it costs nothing more to read.
    let share_a = n >= m || prepacked.is_some();

    let mut shared_buf = None;
    let shared = match (prepacked, p.a) {
        (Some(panels), _) => panels,
        (None, ASource::Matrix(a)) if share_a => {
            let buf = shared_buf.insert(PackBuf::take(Slot::Shared, m_panels * K::MR * k)).as_mut_slice();
            let src = StripSource::rows_of_a(a);
            pack_shared(buf, m, K::MR, k, kc_max, parallel, &|dst, i0, p0, kc| K::pack_a(dst, src, i0, m, p0, kc));
            Panels { data: buf, total: m_panels, first: 0 }
        }
        _ => {
            let buf = shared_buf.insert(PackBuf::take(Slot::Shared, n_panels * K::NR * k)).as_mut_slice();
            pack_shared(buf, n, K::NR, k, kc_max, parallel, &|dst, j0, p0, kc| pack_b::<K>(p.b, dst, j0, n, p0, kc));
            Panels { data: buf, total: n_panels, first: 0 }
        }
    };

    // Tiles: `strips` along the locally packed dimension, each cut into `cuts` pieces.
    let (local_panels, shared_panels, target) =
        if share_a { (n_panels, m_panels, K::NB / K::NR) } else { (m_panels, n_panels, K::MB / K::MR) };
    let (strips, cuts) = plan_tiles(local_panels, shared_panels, target, threads);
    let cptr = CPtr(c.as_mut_ptr());
    let run = |t: usize| {
        let local = split(t / cuts, strips, local_panels);
        let across = split(t % cuts, cuts, shared_panels);
        // SAFETY: the CPU supports `K` (our caller's contract); tiles of the grid are disjoint,
        // so no two tasks write the same element of C; `c` outlives the parallel section.
        unsafe {
            if share_a {
                tile_sharing_a::<K>(shared, p, kc_max, across, local, cptr.get());
            } else {
                tile_sharing_b::<K>(shared, p, kc_max, local, across, cptr.get());
            }
        }
    };
    let tiles = strips * cuts;
    if parallel && tiles > 1 {
        (0..tiles).into_par_iter().for_each(run);
    } else {
        (0..tiles).for_each(run);
    }
}

/// Packs k indices `p0 .. p0 + kc` of the B columns from `j0` on (panels of `K::NR`) into `dst`.
#[inline(always)]
fn pack_b<K: MicroKernel>(b: BOperand<'_>, dst: &mut [f32], j0: usize, n: usize, p0: usize, kc: usize) {
    match b {
        BOperand::Matrix(b) => K::pack_b(dst, StripSource::cols_of_b(b), j0, n, p0, kc),
        BOperand::Panels(source) => source.pack(dst, K::NR, j0, n, p0, kc),
    }
}

/// `pack(dst, w0, p0, kc)`: packs k indices `p0 .. p0 + kc` of the panels from strip `w0` on
/// that fill `dst`.
type PackPanels<'a> = dyn Fn(&mut [f32], usize, usize, usize) + Sync + 'a;

/// Packs a whole operand (`extent` strips, panels of width `w`), k block after k block (`kc_max`
/// long, the last maybe shorter); inside a block, micro-panel after micro-panel, so the panels a
/// tile walks through for one k block are adjacent. (Panel-major storage over the whole of k
/// would put them a power of two apart for power-of-two k, all in the same cache sets.)
fn pack_shared(
    dst: &mut [f32],
    extent: usize,
    w: usize,
    k: usize,
    kc_max: usize,
    parallel: bool,
    pack: &PackPanels<'_>,
) {
    let panels = extent.div_ceil(w);
    // Panels are packed in groups about 256 strips wide: long sequential runs when a source row
    // feeds all the group's panels, and few enough tasks that scheduling costs nothing.
    // With threads to share, at least one group each: a small operand (an MLP's 128-row batch
    // is 10 panels) would otherwise be one group, packed by one thread while the others wait.
    let group_panels = if parallel {
        256usize.div_ceil(w).min(panels.div_ceil(rayon::current_num_threads())).max(1)
    } else {
        256usize.div_ceil(w)
    };
    let mut rest = dst;
    let mut p0 = 0;
    while p0 < k {
        let kc = kc_max.min(k - p0);
        let (block, tail) = rest.split_at_mut(panels * w * kc);
        rest = tail;
        let job = |(i, group): (usize, &mut [f32])| pack(group, i * group_panels * w, p0, kc);
        let group_len = group_panels * w * kc;
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

/// How to cut C: into `strips` along the locally packed dimension (`local_panels` panels,
/// about `target` per strip), each strip cut `cuts` times across. With several threads the tiles
/// are cut further until they divide evenly among the threads (or are numerous enough that work
/// stealing evens them out): more strips while they stay at least `MIN_STRIP_PANELS` wide,
/// otherwise more cuts, which costs packing the same local block once per cut.
fn plan_tiles(local_panels: usize, shared_panels: usize, target: usize, threads: usize) -> (usize, usize) {
    const MIN_STRIP_PANELS: usize = 4;
    let mut strips = local_panels.div_ceil(target);
    let mut cuts = 1;
    if threads <= 1 {
        return (strips, cuts);
    }
    loop {
        let tiles = strips * cuts;
        if tiles.is_multiple_of(threads) || tiles >= 8 * threads {
            return (strips, cuts);
        }
        if (strips + 1) * MIN_STRIP_PANELS <= local_panels {
            strips += 1;
        } else if cuts < shared_panels {
            cuts += 1;
        } else if strips < local_panels {
            strips += 1;
        } else {
            return (strips, cuts);
        }
    }
}

/// Computes the C tile made of A panels `rows` and B panels `cols`, A being packed in `pa` and
/// B packed here block by block.
///
/// # Safety
/// The CPU supports `K`; `pa` holds A packed for `K`; `c` points at C as checked in [`gemm`] and
/// no one else accesses this tile meanwhile.
unsafe fn tile_sharing_a<K: MicroKernel>(
    pa: Panels<'_>,
    p: &Problem<'_>,
    kc_max: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    c: *mut f32,
) {
    let mut b_buf = PackBuf::take(Slot::Tile, cols.len() * K::NR * kc_max);
    let mut pc = 0;
    while pc < p.k {
        let kc = kc_max.min(p.k - pc);
        let b_block = &mut b_buf.as_mut_slice()[..cols.len() * K::NR * kc];
        pack_b::<K>(p.b, b_block, cols.start * K::NR, p.n, pc, kc);
        let a_block = pa.block(K::MR, pc, kc);
        // beta applies once; later k blocks add onto what the first one stored.
        let beta = if pc == 0 { p.beta } else { 1.0 };
        let last = pc + kc == p.k;
        for ip in rows.clone() {
            let a = &a_block[ip * K::MR * kc..][..kc * K::MR];
            for (jl, b) in b_block.chunks_exact(K::NR * kc).enumerate() {
                // SAFETY: forwarded from our contract.
                unsafe { micro_tile::<K>(p, kc, a, b, ip, cols.start + jl, beta, last, c) };
            }
        }
        pc += kc;
    }
}

/// Computes the C tile made of A panels `rows` and B panels `cols`, B being packed in `pb` and
/// A packed here block by block.
///
/// # Safety
/// The CPU supports `K`; `pb` holds B packed for `K`; `c` points at C as checked in [`gemm`] and
/// no one else accesses this tile meanwhile.
unsafe fn tile_sharing_b<K: MicroKernel>(
    pb: Panels<'_>,
    p: &Problem<'_>,
    kc_max: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    c: *mut f32,
) {
    let ASource::Matrix(a_matrix) = p.a else { unreachable!("a packed A is always the shared operand") };
    let mut a_buf = PackBuf::take(Slot::Tile, rows.len() * K::MR * kc_max);
    let a_src = StripSource::rows_of_a(a_matrix);
    let mut pc = 0;
    while pc < p.k {
        let kc = kc_max.min(p.k - pc);
        let a_block = &mut a_buf.as_mut_slice()[..rows.len() * K::MR * kc];
        K::pack_a(a_block, a_src, rows.start * K::MR, p.m, pc, kc);
        let b_block = pb.block(K::NR, pc, kc);
        let beta = if pc == 0 { p.beta } else { 1.0 };
        let last = pc + kc == p.k;
        // B micro-panel outermost: it stays in L1 while the tile's A micro-panels stream from L2.
        for jp in cols.clone() {
            let b = &b_block[jp * K::NR * kc..][..kc * K::NR];
            for (il, a) in a_block.chunks_exact(K::MR * kc).enumerate() {
                // SAFETY: forwarded from our contract.
                unsafe { micro_tile::<K>(p, kc, a, b, rows.start + il, jp, beta, last, c) };
            }
        }
        pc += kc;
    }
}

/// One micro-kernel call: the `MR x NR` tile of C at A panel `ip`, B panel `jp`, from the
/// micro-panels `a` (`kc * MR` floats) and `b` (`kc * NR`), clipped to C's edges; after the
/// `last` k block, the epilogue too.
///
/// # Safety
/// The CPU supports `K`; `c` points at C as checked in [`gemm`]; no one else accesses this tile
/// meanwhile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_tile<K: MicroKernel>(
    p: &Problem<'_>,
    kc: usize,
    a: &[f32],
    b: &[f32],
    ip: usize,
    jp: usize,
    beta: f32,
    last: bool,
    c: *mut f32,
) {
    assert!(a.len() >= kc * K::MR && b.len() >= kc * K::NR);
    let (i0, j0) = (ip * K::MR, jp * K::NR);
    let (rows, cols) = ((p.m - i0).min(K::MR), (p.n - j0).min(K::NR));
    // SAFETY: `a`/`b` hold the kc * MR and kc * NR floats the kernel reads (checked above). The
    // tile's top-left element (i0, j0) has i0 < m and j0 < n (panels exist only where C does), and
    // it spans at most `m - i0` rows and `n - j0` columns, all inside the C region checked in
    // `gemm`; exclusive access and CPU support are our caller's contract.
    unsafe {
        K::tile(kc, a.as_ptr(), b.as_ptr(), c.add(i0 * p.ldc + j0), p.ldc, rows, cols, beta);
    }
    if last && !p.epilogue.is_none() {
        for r in i0..i0 + rows {
            // SAFETY: row r's columns j0 .. j0 + cols lie in the C region checked in `gemm`, in
            // the tile this task owns exclusively (our caller's contract).
            let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * p.ldc + j0), cols) };
            finish_row(&p.epilogue, r, j0, row);
        }
    }
}

/// Applies the epilogue to C's row `i`, columns `j0 ..` (the slice `row`).
#[inline(always)]
fn finish_row(e: &Epilogue<'_>, i: usize, j0: usize, row: &mut [f32]) {
    if let Some(bias) = e.row_bias {
        let b = bias[i];
        row.iter_mut().for_each(|v| *v += b);
    }
    if let Some(norm) = e.row_norm {
        let (m, s, b) = (norm.mean[i], norm.scale[i], norm.shift[i]);
        row.iter_mut().for_each(|v| *v = (*v - m) * s + b);
    }
    if let Some((res, ld)) = e.residual {
        let res = &res[i * ld + j0..][..row.len()];
        row.iter_mut().zip(res).for_each(|(v, r)| *v += r);
    }
    if e.relu {
        // Written so that NaN survives, as the ReLU op keeps it.
        row.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
    }
}

/// The epilogue over a whole `m x n` C (the k == 0 product, which has no tiles).
pub(super) fn apply_epilogue_rows(e: &Epilogue<'_>, c: &mut [f32], ldc: usize, m: usize, n: usize) {
    for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
        finish_row(e, i, 0, &mut row[..n]);
    }
}

/// Packs a whole `m x k` A for kernel `K` into `dst` (`m` rounded up to panels, times `k`
/// floats; every one is written), in the layout [`gemm`] reads a shared A in.
///
/// # Safety
/// The CPU supports the instructions `K` uses.
pub(super) unsafe fn pack_whole_a<K: MicroKernel>(m: usize, k: usize, a: MatRef<'_>, dst: &mut [f32]) {
    let kc_max = k.div_ceil(k.div_ceil(K::KC));
    assert_eq!(dst.len(), m.div_ceil(K::MR) * K::MR * k, "pack_whole_a: destination of the wrong size");
    let parallel = 2 * m * k >= PARALLEL_MIN_FLOPS && parallel::may_split();
    let src = StripSource::rows_of_a(a);
    pack_shared(dst, m, K::MR, k, kc_max, parallel, &|dst, i0, p0, kc| K::pack_a(dst, src, i0, m, p0, kc));
}
