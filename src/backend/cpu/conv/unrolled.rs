//! Implicit im2col: a convolution's input unrolled straight into the GEMM's B panels.
//!
//! Column j of B is output pixel `q0 + j` of the batch; row r = (c * kh + ky) * kw + kx is input
//! channel c seen through kernel tap (ky, kx). Writing the panels directly from the images saves
//! the column matrix's round trip through L2: im2col would write it and the GEMM's packing
//! would read it back.
//!
//! For each panel (`nr` output pixels), [`PanelTaps`] records per kernel tap how each group of 16
//! lanes reads channel 0 of the panel's first image: which lanes read (the others, over the
//! padding or past the last column, get zero) and whether they read consecutive floats (a
//! stride-1 row: one masked load), every other float (a stride-2 row: two loads and a permute)
//! or anything else (a masked gather of per-lane indices). A panel row is then channel c's plane
//! read that way, 16 lanes at a time with AVX-512, or 8 at a time (each group's two halves) with
//! AVX2.

use std::ops::Range;
use std::sync::OnceLock;

use crate::backend::cpu::gemm::PanelSource;
use crate::backend::cpu::simd::SimdLevel;
use crate::backend::geometry::Conv2dGeometry;

use super::im2col::valid_range;

/// A tap table entry for a lane that reads nothing (zero).
const MISS: i32 = -1;

/// Lanes per AVX-512 vector, the unit of [`Group`].
const GROUP: usize = 16;

/// Lanes per AVX2 vector: half a [`Group`].
const HALF: usize = 8;

/// x unrolled for the convolution `g`, from batch pixel `q0` on, as a GEMM B operand
/// (`C_in * kh * kw` rows).
pub(super) struct UnrolledInput<'a> {
    level: SimdLevel,
    g: &'a Conv2dGeometry,
    x: &'a [f32],
    q0: usize,
    /// Every panel's tap table, built when the panel is first packed: the GEMM packs the same
    /// panels once per k block, and building a table cost as much as filling a block's rows.
    tables: OnceLock<PanelTables>,
}

/// The tap tables of the panels of a B operand `n` columns wide in panels of `nr`, each built
/// on first use; `None` for a panel whose images are too large for a table.
struct PanelTables {
    nr: usize,
    n: usize,
    panels: Vec<OnceLock<Option<PanelTaps>>>,
}

impl<'a> UnrolledInput<'a> {
    pub(super) fn new(level: SimdLevel, g: &'a Conv2dGeometry, x: &'a [f32], q0: usize) -> Self {
        assert!(x.len() >= g.input_len(), "conv2d: input shorter than its geometry");
        UnrolledInput { level, g, x, q0, tables: OnceLock::new() }
    }

    /// The tap table of panel `i` (of `nr` columns out of `n`), built by its first user: the
    /// tiles of a parallel GEMM own disjoint panels, so they build their tables side by side.
    /// `None` when the panel's images are too large for a table.
    fn table(&self, nr: usize, n: usize, i: usize) -> Option<&PanelTaps> {
        let g = self.g;
        let tables = self.tables.get_or_init(|| PanelTables {
            nr,
            n,
            panels: (0..n.div_ceil(nr)).map(|_| OnceLock::new()).collect(),
        });
        // The GEMM asks one operand for one panel width and column count throughout.
        assert!(tables.nr == nr && tables.n == n, "conv2d: panels of another shape than the first");
        let table = tables.panels[i].get_or_init(|| {
            let mut table = PanelTaps::new(g.kernel_h * g.kernel_w, nr);
            let (first, width) = (i * nr, (n - i * nr).min(nr));
            table.fill(g, self.q0 + first, width).then_some(table)
        });
        table.as_ref()
    }

    /// The vector fill for this level and panel width, if there is one.
    fn vector_fill(&self, nr: usize) -> Option<SimdLevel> {
        #[cfg(target_arch = "x86_64")]
        {
            if self.use_avx512(nr) {
                return Some(SimdLevel::Avx512);
            }
            let avx2 = self.level >= SimdLevel::Avx2 && is_x86_feature_detected!("avx2");
            if avx2 && nr.is_multiple_of(HALF) {
                return Some(SimdLevel::Avx2);
            }
        }
        let _ = nr;
        None
    }

    fn use_avx512(&self, nr: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            nr.is_multiple_of(GROUP) && self.level == SimdLevel::Avx512 && is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = nr;
            false
        }
    }
}

impl UnrolledInput<'_> {
    /// Packs the panels filling `dst` (see [`PanelSource::pack`]), each panel's rows written by
    /// `fill` from the panel's tap table.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn pack_with(
        &self,
        dst: &mut [f32],
        nr: usize,
        j0: usize,
        n: usize,
        p0: usize,
        kc: usize,
        fill: impl Fn(&PanelTaps, RowRange, &mut [f32]),
    ) {
        let g = self.g;
        let taps = g.kernel_h * g.kernel_w;
        assert!(j0.is_multiple_of(nr), "conv2d: a panel starting at column {j0}");
        for (i, panel) in dst.chunks_exact_mut(kc * nr).enumerate() {
            let first = j0 + i * nr;
            let width = n.saturating_sub(first).min(nr);
            if width == 0 {
                panel.fill(0.0);
                continue;
            }
            match self.table(nr, n, first / nr) {
                Some(table) => fill(table, RowRange { c: p0 / taps, t: p0 % taps, kc }, panel),
                None => fill_direct(g, self.x, self.q0 + first, width, nr, p0, panel),
            }
        }
    }

    /// [`Self::pack_with`] compiled for AVX-512, rows by [`fill_avx512`].
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `nr` is a multiple of 16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_avx512(&self, dst: &mut [f32], nr: usize, j0: usize, n: usize, p0: usize, kc: usize) {
        let (g, x) = (self.g, self.x);
        self.pack_with(dst, nr, j0, n, p0, kc, |table, rows, panel| {
            // SAFETY: AVX-512F is our caller's contract; the table was just filled for `g`,
            // whose input `new` checked `x` to hold; the GEMM asks only for rows below k.
            unsafe { fill_avx512(table, x, g, rows, panel) }
        });
    }

    /// [`Self::pack_with`] compiled for AVX2, rows by [`fill_avx2`].
    ///
    /// # Safety
    /// The CPU supports AVX2; `nr` is a multiple of 8.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn pack_avx2(&self, dst: &mut [f32], nr: usize, j0: usize, n: usize, p0: usize, kc: usize) {
        let (g, x) = (self.g, self.x);
        self.pack_with(dst, nr, j0, n, p0, kc, |table, rows, panel| {
            // SAFETY: AVX2 is our caller's contract; the table was just filled for `g`, whose
            // input `new` checked `x` to hold; the GEMM asks only for rows below k.
            unsafe { fill_avx2(table, x, g, rows, panel) }
        });
    }
}

impl PanelSource for UnrolledInput<'_> {
    fn pack(&self, dst: &mut [f32], nr: usize, j0: usize, n: usize, p0: usize, kc: usize) {
        match self.vector_fill(nr) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `vector_fill` checked AVX-512F and that nr is a multiple of 16.
            Some(SimdLevel::Avx512) => return unsafe { self.pack_avx512(dst, nr, j0, n, p0, kc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `vector_fill` checked AVX2 and that nr is a multiple of 8.
            Some(SimdLevel::Avx2) => return unsafe { self.pack_avx2(dst, nr, j0, n, p0, kc) },
            _ => {}
        }
        let (g, x) = (self.g, self.x);
        self.pack_with(dst, nr, j0, n, p0, kc, |table, rows, panel| fill_scalar(table, x, g, rows, panel));
    }
}

/// The panel rows being packed: `kc` rows from channel `c`, tap `t` on.
#[derive(Clone, Copy)]
struct RowRange {
    c: usize,
    t: usize,
    kc: usize,
}

/// 16 lanes of one tap: which lanes read (bit l for lane l), and how.
#[derive(Clone, Copy)]
struct Group {
    mask: u16,
    read: Read,
}

/// How a [`Group`]'s lanes are read.
#[derive(Clone, Copy)]
enum Read {
    /// Lane l reads `start + l` (a stride-1 row): one masked load.
    Unit { start: i32 },
    /// Lane l reads `start + 2 l` (a stride-2 row): two masked loads of 16 floats (`low`,
    /// `high`: the enabled float positions) and a permute that keeps the even ones.
    Pairs { start: i32, low: u16, high: u16 },
    /// Anywhere else: a masked gather of the 16 indices from `at` in the table's `index`.
    Gather { at: u32 },
}

impl Default for Group {
    fn default() -> Group {
        Group { mask: 0, read: Read::Unit { start: 0 } }
    }
}

/// Most lanes a panel may have (the widest kernel's NR is 32).
const MAX_LANES: usize = 64;

/// Consecutive lanes of a panel that lie in one output row: lanes `lane .. lane + len` are
/// output pixels (oy, ox ..) of the image whose channel 0 starts `image` floats after the table's
/// base.
#[derive(Clone, Copy, Default)]
struct Run {
    lane: usize,
    len: usize,
    image: i64,
    oy: usize,
    ox: usize,
}

/// How each 16-lane group of a panel reads each tap, relative to channel 0 of the panel's first
/// image (at `base` in x). Gathers read 16 per-lane indices each in `index` ([`MISS`] for lanes that
/// read nothing).
struct PanelTaps {
    taps: usize,
    nr: usize,
    groups_per_tap: usize,
    base: usize,
    index: Vec<i32>,
    groups: Vec<Group>,
}

impl PanelTaps {
    fn new(taps: usize, nr: usize) -> PanelTaps {
        assert!(nr <= MAX_LANES, "conv2d: panels of {nr} columns");
        let groups_per_tap = nr.div_ceil(GROUP);
        PanelTaps {
            taps,
            nr,
            groups_per_tap,
            base: 0,
            index: Vec::new(),
            groups: vec![Group::default(); taps * groups_per_tap],
        }
    }

    /// Fills the table for the `width` pixels from batch pixel `q`. False when some index does
    /// not fit an i32 (the panel's images are then too large for the table).
    ///
    /// The work is per tap and run of lanes along an output row, not per lane: which lanes read
    /// is a range of output columns (the same for every row) within a row that reads or not.
    #[inline(always)]
    fn fill(&mut self, g: &Conv2dGeometry, q: usize, width: usize) -> bool {
        let (oh, ow, hw) = (g.out_h(), g.out_w(), g.in_h * g.in_w);
        let image_len = g.in_channels * hw;
        let (first_image, last_image) = (q / (oh * ow), (q + width - 1) / (oh * ow));
        let span = (last_image - first_image) * image_len + hw;
        if span > i32::MAX as usize {
            return false;
        }
        self.base = first_image * image_len;
        self.index.clear();
        let mut runs = [Run::default(); MAX_LANES];
        let mut count = 0;
        let (mut n, mut oy, mut ox, mut lane) = (first_image, (q % (oh * ow)) / ow, q % ow, 0);
        while lane < width {
            let len = (ow - ox).min(width - lane);
            runs[count] = Run { lane, len, image: ((n - first_image) * image_len) as i64, oy, ox };
            (count, lane, ox, oy) = (count + 1, lane + len, 0, oy + 1);
            if oy == oh {
                (oy, n) = (0, n + 1);
            }
        }
        let runs = &runs[..count];
        for ky in 0..g.kernel_h {
            let (y0, y1) = valid_range(ky, g.pad_h, g.stride_h, g.in_h, oh);
            for kx in 0..g.kernel_w {
                let (x0, x1) = valid_range(kx, g.pad_w, g.stride_w, g.in_w, ow);
                let tap = Tap { ky, kx, rows: y0..y1, cols: x0..x1 };
                let t = ky * g.kernel_w + kx;
                for h in 0..self.groups_per_tap {
                    let group = self.group(g, runs, &tap, h);
                    self.groups[t * self.groups_per_tap + h] = group;
                }
            }
        }
        true
    }

    /// How group `h` (lanes 16h ..) reads through `tap`.
    #[inline(always)]
    fn group(&mut self, g: &Conv2dGeometry, runs: &[Run], tap: &Tap, h: usize) -> Group {
        let lane0 = h * GROUP;
        let step = g.stride_w as i64;
        let (mut mask, mut start, mut aligned) = (0u16, None, true);
        for_each_piece(g, runs, tap, lane0, |a, b, first| {
            mask |= (((1u32 << (b - a)) - 1) << (a - lane0)) as u16;
            let s = first - step * (a - lane0) as i64;
            aligned &= *start.get_or_insert(s) == s;
        });
        let read = match start {
            None => Read::Unit { start: 0 },
            Some(s) if aligned && step == 1 => Read::Unit { start: s as i32 },
            Some(s) if aligned && step == 2 => {
                // Lane l's float is position 2l of the 32 loaded: in the low half for l < 8.
                let spread = |bits: u16| (0..8).fold(0u16, |acc, l| acc | (((bits >> l) & 1) << (2 * l)));
                Read::Pairs { start: s as i32, low: spread(mask & 0xff), high: spread(mask >> 8) }
            }
            Some(_) => {
                let at = self.index.len();
                self.index.resize(at + GROUP, MISS);
                let index = &mut self.index[at..];
                for_each_piece(g, runs, tap, lane0, |a, b, first| {
                    for l in a..b {
                        // In range of i32: a pixel of the panel's images, whose span was checked.
                        index[l - lane0] = (first + step * (l - a) as i64) as i32;
                    }
                });
                Read::Gather { at: at as u32 }
            }
        };
        Group { mask, read }
    }

    /// The 16 lane indices of a gather, from `at`.
    fn gather_index(&self, at: u32) -> &[i32] {
        &self.index[at as usize..][..GROUP]
    }
}

/// Calls `f(a, b, first)` for each piece of the 16 lanes from `lane0` that lie in one output row
/// and read through `tap`: lanes `a .. b`, lane `a + i` reading index `first + stride_w * i`.
#[inline(always)]
fn for_each_piece(g: &Conv2dGeometry, runs: &[Run], tap: &Tap, lane0: usize, mut f: impl FnMut(usize, usize, i64)) {
    let lanes = lane0..lane0 + GROUP;
    for run in runs {
        if run.lane >= lanes.end || run.lane + run.len <= lanes.start || !tap.rows.contains(&run.oy) {
            continue;
        }
        // The run's lanes whose column reads, clipped to the group.
        let a = (run.lane + tap.cols.start.clamp(run.ox, run.ox + run.len) - run.ox).max(lanes.start);
        let b = (run.lane + tap.cols.end.clamp(run.ox, run.ox + run.len) - run.ox).min(lanes.end);
        if a >= b {
            continue;
        }
        // Inside the image: row and column of lane a are in `tap.rows` / `tap.cols`.
        let iy = (run.oy * g.stride_h + tap.ky - g.pad_h) as i64;
        let ix = ((run.ox + a - run.lane) * g.stride_w + tap.kx - g.pad_w) as i64;
        f(a, b, run.image + iy * g.in_w as i64 + ix);
    }
}

/// Kernel tap (ky, kx) and the output rows and columns whose window reads the image through it.
struct Tap {
    ky: usize,
    kx: usize,
    rows: Range<usize>,
    cols: Range<usize>,
}

/// Panel rows from the table, one float at a time.
fn fill_scalar(table: &PanelTaps, x: &[f32], g: &Conv2dGeometry, rows: RowRange, panel: &mut [f32]) {
    let hw = g.in_h * g.in_w;
    let RowRange { mut c, mut t, kc } = rows;
    for row in panel.chunks_exact_mut(table.nr).take(kc) {
        let plane = &x[table.base + c * hw..];
        for (h, lanes) in row.chunks_mut(GROUP).enumerate() {
            let group = table.groups[t * table.groups_per_tap + h];
            for (l, d) in lanes.iter_mut().enumerate() {
                let reads = group.mask >> l & 1 == 1;
                *d = match group.read {
                    _ if !reads => 0.0,
                    Read::Unit { start } => plane[(start + l as i32) as usize],
                    Read::Pairs { start, .. } => plane[(start + 2 * l as i32) as usize],
                    Read::Gather { at } => plane[table.gather_index(at)[l] as usize],
                };
            }
        }
        t += 1;
        if t == table.taps {
            (c, t) = (c + 1, 0);
        }
    }
}

/// Panel rows from the table, 16 lanes at a time: a masked load for consecutive lanes, two
/// loads and a permute for every other float, a masked gather otherwise.
///
/// # Safety
/// The CPU supports AVX-512F; `table` was filled for geometry `g`, whose input `x` holds; the
/// panel is `kc` rows of `table.nr` floats, `nr` a multiple of 16; the rows exist (`c` stays
/// below `C_in`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fill_avx512(table: &PanelTaps, x: &[f32], g: &Conv2dGeometry, rows: RowRange, panel: &mut [f32]) {
    use std::arch::x86_64::*;
    let hw = g.in_h * g.in_w;
    let RowRange { mut c, mut t, kc } = rows;
    assert!(panel.len() >= kc * table.nr && (c * table.taps + t + kc) <= g.in_channels * table.taps);
    // Positions 0, 2, .., 30 of the 32 floats of two vectors.
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for p in 0..kc {
        // Channel c of the panel's first image. Lanes reading later images reach past this
        // plane, but only to elements of x (the table indexes real pixels).
        let plane = x.as_ptr().wrapping_add(table.base + c * hw);
        for h in 0..table.groups_per_tap {
            let group = table.groups[t * table.groups_per_tap + h];
            let mask: __mmask16 = group.mask;
            // SAFETY: each position a load or gather enables (in `mask`, or `low`/`high` for
            // pairs) is the float a reading lane reads, an element of x by the table's
            // construction (a pixel of an image of this batch, channel c < C_in); disabled
            // positions are never accessed, so their addresses may lie outside x. The store
            // writes 16 floats of row p, inside the panel (asserted above).
            unsafe {
                let v = match group.read {
                    Read::Unit { start } => _mm512_maskz_loadu_ps(mask, plane.wrapping_offset(start as isize)),
                    Read::Pairs { start, low, high } => {
                        let at = plane.wrapping_offset(start as isize);
                        let low = _mm512_maskz_loadu_ps(low, at);
                        let high = _mm512_maskz_loadu_ps(high, at.wrapping_add(GROUP));
                        _mm512_permutex2var_ps(low, evens, high)
                    }
                    Read::Gather { at } => {
                        let index = _mm512_loadu_si512(table.gather_index(at).as_ptr().cast());
                        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, index, plane)
                    }
                };
                _mm512_storeu_ps(panel.as_mut_ptr().add(p * table.nr + h * GROUP), v);
            }
        }
        t += 1;
        if t == table.taps {
            (c, t) = (c + 1, 0);
        }
    }
}

/// Panel rows from the table, 8 lanes (half a group) at a time: a plain load where all 8 lanes
/// read consecutive floats, a masked load where some do, two loads and a shuffle for every
/// other float, a masked gather otherwise.
///
/// # Safety
/// The CPU supports AVX2; `table` was filled for geometry `g`, whose input `x` holds; the panel
/// is `kc` rows of `table.nr` floats, `nr` a multiple of 8; the rows exist (`c` stays below
/// `C_in`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_avx2(table: &PanelTaps, x: &[f32], g: &Conv2dGeometry, rows: RowRange, panel: &mut [f32]) {
    use std::arch::x86_64::*;
    let hw = g.in_h * g.in_w;
    let RowRange { mut c, mut t, kc } = rows;
    assert!(panel.len() >= kc * table.nr && (c * table.taps + t + kc) <= g.in_channels * table.taps);
    let halves = table.nr / HALF;
    // Bit l of an 8-bit mask, for widening it to a vector mask.
    let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let widen = |bits: u16| {
        let bits = _mm256_set1_epi32(i32::from(bits & 0xff));
        _mm256_cmpeq_epi32(_mm256_and_si256(bits, bit), bit)
    };
    for p in 0..kc {
        // As in `fill_avx512`: lanes reading later images reach past this plane, but only to
        // elements of x.
        let plane = x.as_ptr().wrapping_add(table.base + c * hw);
        for half in 0..halves {
            let (h, upper) = (half / 2, half % 2);
            let group = table.groups[t * table.groups_per_tap + h];
            let mask = group.mask >> (upper * HALF) & 0xff;
            // SAFETY: as in `fill_avx512`: every float a load or gather enables is one a reading
            // lane reads, an element of x by the table's construction; disabled positions are
            // never accessed. The store writes 8 floats of row p, inside the panel.
            unsafe {
                let v = match group.read {
                    _ if mask == 0 => _mm256_setzero_ps(),
                    Read::Unit { start } => {
                        let at = plane.wrapping_offset(start as isize + (upper * HALF) as isize);
                        if mask == 0xff {
                            _mm256_loadu_ps(at)
                        } else {
                            _mm256_maskload_ps(at, widen(mask))
                        }
                    }
                    Read::Pairs { start, low, high } => {
                        // This half's 8 lanes read positions 0, 2, .., 14 of the 16 floats here.
                        let positions = if upper == 0 { low } else { high };
                        let at = plane.wrapping_offset(start as isize + (upper * GROUP) as isize);
                        let a = _mm256_maskload_ps(at, widen(positions));
                        let b = _mm256_maskload_ps(at.wrapping_add(HALF), widen(positions >> 8));
                        // [a0 a2 b0 b2 | a4 a6 b4 b6], then its 64-bit quarters reordered 0 2 1 3.
                        let evens = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(evens)))
                    }
                    Read::Gather { at } => {
                        let index = table.gather_index(at)[upper * HALF..].as_ptr();
                        let index = _mm256_loadu_si256(index.cast());
                        let enabled = _mm256_castsi256_ps(widen(mask));
                        _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), plane, index, enabled)
                    }
                };
                _mm256_storeu_ps(panel.as_mut_ptr().add(p * table.nr + half * HALF), v);
            }
        }
        t += 1;
        if t == table.taps {
            (c, t) = (c + 1, 0);
        }
    }
}

/// Panel rows computed pixel by pixel, for images too large for a [`PanelTaps`].
fn fill_direct(g: &Conv2dGeometry, x: &[f32], q: usize, width: usize, nr: usize, p0: usize, panel: &mut [f32]) {
    let (taps, hw, plane, ow) = (g.kernel_h * g.kernel_w, g.in_h * g.in_w, g.out_h() * g.out_w(), g.out_w());
    for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
        let (c, t) = ((p0 + p) / taps, (p0 + p) % taps);
        let (ky, kx) = (t / g.kernel_w, t % g.kernel_w);
        for (l, d) in row.iter_mut().enumerate() {
            *d = 0.0;
            if l >= width {
                continue;
            }
            let (n, pixel) = ((q + l) / plane, (q + l) % plane);
            let (oy, ox) = (pixel / ow, pixel % ow);
            let iy = (oy * g.stride_h + ky).checked_sub(g.pad_h).filter(|&y| y < g.in_h);
            let ix = (ox * g.stride_w + kx).checked_sub(g.pad_w).filter(|&x| x < g.in_w);
            if let (Some(iy), Some(ix)) = (iy, ix) {
                *d = x[(n * g.in_channels + c) * hw + iy * g.in_w + ix];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element (r, q) of the unrolled matrix, straight from the definition.
    fn reference(g: &Conv2dGeometry, x: &[f32], r: usize, q: usize) -> f32 {
        let (taps, plane) = (g.kernel_h * g.kernel_w, g.out_h() * g.out_w());
        let (c, ky, kx) = (r / taps, (r % taps) / g.kernel_w, r % g.kernel_w);
        let (n, oy, ox) = (q / plane, (q % plane) / g.out_w(), q % g.out_w());
        let iy = (oy * g.stride_h + ky).checked_sub(g.pad_h).filter(|&y| y < g.in_h);
        let ix = (ox * g.stride_w + kx).checked_sub(g.pad_w).filter(|&v| v < g.in_w);
        match (iy, ix) {
            (Some(iy), Some(ix)) => x[((n * g.in_channels + c) * g.in_h + iy) * g.in_w + ix],
            _ => 0.0,
        }
    }

    fn geometry(batch: usize, c: usize, size: (usize, usize), k: usize, stride: usize, pad: usize) -> Conv2dGeometry {
        Conv2dGeometry {
            batch,
            in_channels: c,
            out_channels: 1,
            in_h: size.0,
            in_w: size.1,
            kernel_h: k,
            kernel_w: k,
            stride_h: stride,
            stride_w: stride,
            pad_h: pad,
            pad_w: pad,
        }
    }

    /// Every panel layout the GEMM asks for, on every way of reading (unit loads, pairs,
    /// gathers, panels across images, past the last column), equals the definition.
    #[test]
    fn panels_equal_the_unrolled_matrix() {
        let cases = [
            geometry(2, 3, (9, 9), 3, 1, 1),   // same width: unit loads, panels across images
            geometry(3, 2, (7, 7), 3, 2, 1),   // stride 2 rows of 4: gathers
            geometry(2, 2, (5, 32), 3, 2, 1),  // stride 2 rows of 16: pairs
            geometry(1, 3, (23, 23), 7, 2, 3), // the stem's shape, smaller
            geometry(2, 4, (6, 5), 1, 1, 0),   // pointwise, non-square
            geometry(2, 2, (8, 8), 3, 1, 0),   // stride 1, narrower output: rows wrap
            geometry(2, 2, (10, 10), 3, 3, 2), // stride 3: gathers only
            geometry(4, 2, (2, 2), 3, 1, 1),   // planes of 4 pixels: many images per group
        ];
        for g in cases {
            let x: Vec<f32> = (0..g.input_len()).map(|i| 1.0 + i as f32).collect();
            let (k, n) = (g.in_channels * g.kernel_h * g.kernel_w, g.batch * g.out_h() * g.out_w());
            for level in SimdLevel::supported() {
                for nr in [8, 16, 32] {
                    for q0 in [0, 3] {
                        let source = UnrolledInput::new(level, &g, &x, q0);
                        let cols = n - q0;
                        for (p0, kc) in [(0, k), (1, k - 1), (k / 2, k - k / 2)] {
                            let panels = cols.div_ceil(nr);
                            let mut dst = vec![f32::NAN; panels * nr * kc];
                            source.pack(&mut dst, nr, 0, cols, p0, kc);
                            for (i, panel) in dst.chunks_exact(nr * kc).enumerate() {
                                for p in 0..kc {
                                    for w in 0..nr {
                                        let j = i * nr + w;
                                        let want = if j < cols { reference(&g, &x, p0 + p, q0 + j) } else { 0.0 };
                                        let got = panel[p * nr + w];
                                        assert_eq!(got, want, "{g:?} {level:?} nr {nr} q0 {q0} row {} col {j}", p0 + p);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The pixel-by-pixel fallback for images too large for a tap table agrees too.
    #[test]
    fn direct_fill_equals_the_unrolled_matrix() {
        let g = geometry(2, 2, (7, 6), 3, 2, 1);
        let x: Vec<f32> = (0..g.input_len()).map(|i| 1.0 + i as f32).collect();
        let (k, n, nr) = (2 * 9, g.batch * g.out_h() * g.out_w(), 16);
        for first in (0..n).step_by(5) {
            let width = (n - first).min(nr);
            let mut panel = vec![f32::NAN; nr * k];
            fill_direct(&g, &x, first, width, nr, 0, &mut panel);
            for p in 0..k {
                for w in 0..nr {
                    let want = if w < width { reference(&g, &x, p, first + w) } else { 0.0 };
                    assert_eq!(panel[p * nr + w], want);
                }
            }
        }
    }
}
