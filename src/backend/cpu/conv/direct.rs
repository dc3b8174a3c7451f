//! Direct convolution for small output planes: every output pixel sums over only the kernel
//! taps that land inside the input, so padding is never multiplied.
//!
//! On a 4x4 plane a 3x3, padding-1 convolution's unrolled input is 31% padding zeros (18% on
//! 7x7); the GEMM path multiplies them all. Here the output pixels are grouped by the rectangle
//! of taps that meet the input for them (the interior, each edge, each corner: nine classes for
//! a 3x3 kernel), and a micro-kernel computes a tile of [`MR`] pixels of one class by [`NR`]
//! output channels, looping over the class's taps and the input channels only.
//!
//! The tile's A operand needs no packing: each of its rows is one output pixel, whose input
//! values for tap (ky, kx) and channel c sit at a fixed offset from the pixel's own origin in
//! the NCHW input, so the kernel broadcasts them straight from x (on a 4x4 plane one channel of
//! an image is one cache line). The weights are packed once per call, by output-channel block of
//! [`NR`], input-channel block, tap and channel, so a tile reads them as one stream of vector
//! pairs. Input channels are taken in blocks of [`CHANNEL_BLOCK`] so that the input lines one
//! block touches stay in L1 while the kernel walks the taps over them.
//!
//! Only the AVX-512 level has this kernel; the other levels take the GEMM path.

use std::ops::Range;

use rayon::prelude::*;

use super::scratch::SharedOut;
use super::{plane_out, task_target, ConvFinish};
use crate::backend::cpu::simd::SimdLevel;
use crate::backend::cpu::{buffers, parallel};
use crate::backend::geometry::Conv2dGeometry;

/// Output pixels per tile (broadcast rows of the micro-kernel).
const MR: usize = 12;
/// Output channels per tile: two zmm vectors.
const NR: usize = 32;
/// Input channels per block of the reduction. A corner tile reads one line per image and
/// channel: 12 x 16 lines (12 KiB) stay in a 32 KiB L1 across the taps where 12 x 64 did not
/// (Zen 4, 4x4 planes: 108 against 80 GFLOP/s a core with the images' lines spread).
const CHANNEL_BLOCK: usize = 16;
/// Fewest input channels. With a short reduction per tap the tiles' fixed costs show: the
/// GEMM path was 3x faster on a 1-channel stem and 10-15% faster on DenseNet's growth
/// convolutions' input gradient (32 channels in, as a flipped forward).
const MIN_CHANNELS: usize = 64;
/// Largest output plane (pixels per image and channel) the direct path takes: 56x56, the
/// largest measured. On ResNet18's and DenseNet121's 3x3 convolutions from 56x56 down to 4x4
/// (batches 16 to 128) it was as fast as the GEMM path or up to 1.8x faster.
const MAX_PLANE: usize = 3136;

/// Whether the direct path computes this forward convolution at this SIMD level.
pub(super) fn applies(level: SimdLevel, g: &Conv2dGeometry) -> bool {
    level == SimdLevel::Avx512
        && has_kernel()
        && g.kernel_h * g.kernel_w > 1
        && plane_out(g) <= MAX_PLANE
        && g.batch * plane_out(g) >= MR
        && g.in_channels >= MIN_CHANNELS
}

#[cfg(target_arch = "x86_64")]
fn has_kernel() -> bool {
    is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_kernel() -> bool {
    false
}

/// A convolution's weights packed for the direct kernel: output channels in blocks of [`NR`]
/// (the last zero-padded), each block laid out by input-channel block, tap, channel, then its
/// [`NR`] output channels.
pub struct DirectWeights {
    c_out: usize,
    c_in: usize,
    taps: usize,
    data: Vec<f32>,
}

impl DirectWeights {
    /// Packs `w` (`[C_out, C_in, kh, kw]` of `g`).
    pub fn pack(g: &Conv2dGeometry, w: &[f32]) -> DirectWeights {
        let (c_in, taps) = (g.in_channels, g.kernel_h * g.kernel_w);
        let w = &w[..g.weight_len()];
        Self::pack_with(g.out_channels, c_in, taps, |co, c| (&w[(co * c_in + c) * taps..][..taps], false))
    }

    /// Packs the weights of the input gradient of `g` computed as a forward convolution
    /// ([`super::flipped::transposed_geometry`]), straight from `g`'s weights `w`: output
    /// channel ci, input channel co is `w[co, ci]` with its taps reversed (both axes flipped).
    pub fn pack_flipped(g: &Conv2dGeometry, w: &[f32]) -> DirectWeights {
        let (c_in, taps) = (g.in_channels, g.kernel_h * g.kernel_w);
        let w = &w[..g.weight_len()];
        Self::pack_with(c_in, g.out_channels, taps, |ci, co| (&w[(co * c_in + ci) * taps..][..taps], true))
    }

    /// Packs weights whose taps for output channel `co`, input channel `c` are `kernel(co, c)`:
    /// a slice of `taps` floats, read backwards when the flag is set.
    fn pack_with<'w>(
        c_out: usize,
        c_in: usize,
        taps: usize,
        kernel: impl Fn(usize, usize) -> (&'w [f32], bool) + Sync,
    ) -> DirectWeights {
        let k = c_in * taps;
        let mut data = vec![0.0; c_out.div_ceil(NR) * NR * k];
        data.par_chunks_mut(NR * k).enumerate().for_each(|(blk, dst)| {
            let channels = blk * NR..(blk * NR + NR).min(c_out);
            for cb in channel_blocks(c_in) {
                let block = &mut dst[cb.start * taps * NR..][..cb.len() * taps * NR];
                // Channel by channel, so the rows' few taps per channel are read together and
                // the `taps` destination vectors they go to stay in L1.
                for (i, c) in cb.clone().enumerate() {
                    for (j, co) in channels.clone().enumerate() {
                        let (src, reversed) = kernel(co, c);
                        for (t, &v) in src.iter().enumerate() {
                            let t = if reversed { taps - 1 - t } else { t };
                            block[(t * cb.len() + i) * NR + j] = v;
                        }
                    }
                }
            }
        });
        DirectWeights { c_out, c_in, taps, data }
    }

    /// Whether these are packed weights of `g`'s shape.
    pub fn fits(&self, g: &Conv2dGeometry) -> bool {
        self.c_out == g.out_channels && self.c_in == g.in_channels && self.taps == g.kernel_h * g.kernel_w
    }

    /// The packed weights of output-channel block `blk`.
    fn block(&self, blk: usize) -> &[f32] {
        let len = NR * self.c_in * self.taps;
        &self.data[blk * len..][..len]
    }
}

/// The input-channel blocks of the reduction.
fn channel_blocks(c_in: usize) -> impl Iterator<Item = Range<usize>> {
    (0..c_in).step_by(CHANNEL_BLOCK).map(move |s| s..(s + CHANNEL_BLOCK).min(c_in))
}

/// Output positions that read the input through the same taps.
struct PixelClass {
    /// (tap index ky * kw + kx, offset of that tap's input from a pixel's origin).
    taps: Vec<(usize, isize)>,
    /// The positions (oh * OW + ow) in the output plane, in order.
    positions: Vec<usize>,
    /// The plan's index of this class's first tile.
    first_tile: usize,
}

/// Up to [`MR`] output pixels of one class, computed as one tile.
struct Tile {
    class: usize,
    len: usize,
    /// Per pixel: the image, the position in the output plane, and the input offset of tap
    /// (0, 0) for channel 0 (negative on the top or left border, where that tap is not used).
    pixels: [(usize, usize, isize); MR],
}

impl Tile {
    /// Whether the pixels are consecutive positions of one image: each output channel's values
    /// are then one run of y.
    fn is_run(&self) -> bool {
        let (n0, p0, _) = self.pixels[0];
        self.pixels[..self.len].iter().enumerate().all(|(r, &(n, p, _))| n == n0 && p == p0 + r)
    }
}

/// How one forward call walks its output: the pixel classes, each pixel of a class over the
/// batch (image by image) cut into tiles of [`MR`]. Tiles are made when used, not stored.
struct Plan {
    classes: Vec<PixelClass>,
    tiles: usize,
    batch: usize,
    /// Floats per input image, and the input's geometry for pixel origins.
    image: isize,
    out_w: usize,
    stride: (isize, isize),
    pad: (isize, isize),
    in_w: isize,
}

/// The taps along one axis that meet the input for output position `o`.
fn valid_taps(o: usize, kernel: usize, stride: usize, pad: usize, input: usize) -> Range<usize> {
    // Tap t reads input o * stride + t - pad, which must lie in 0..input.
    let start = pad.saturating_sub(o * stride).min(kernel);
    let end = (input + pad).saturating_sub(o * stride).min(kernel).max(start);
    start..end
}

impl Plan {
    fn new(g: &Conv2dGeometry) -> Plan {
        let (out_h, out_w) = (g.out_h(), g.out_w());
        let mut keys: Vec<(Range<usize>, Range<usize>)> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for oh in 0..out_h {
            let ky = valid_taps(oh, g.kernel_h, g.stride_h, g.pad_h, g.in_h);
            for ow in 0..out_w {
                let kx = valid_taps(ow, g.kernel_w, g.stride_w, g.pad_w, g.in_w);
                let key = (ky.clone(), kx);
                let class = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
                    keys.push(key);
                    members.push(Vec::new());
                    keys.len() - 1
                });
                members[class].push(oh * out_w + ow);
            }
        }
        let in_w = g.in_w as isize;
        let mut tiles = 0;
        let classes = keys
            .iter()
            .zip(members)
            .map(|((ky, kx), positions)| {
                let taps = ky
                    .clone()
                    .flat_map(|y| kx.clone().map(move |x| (y * g.kernel_w + x, y as isize * in_w + x as isize)))
                    .collect();
                let first_tile = tiles;
                tiles += (g.batch * positions.len()).div_ceil(MR);
                PixelClass { taps, positions, first_tile }
            })
            .collect();
        Plan {
            classes,
            tiles,
            batch: g.batch,
            image: (g.in_channels * g.in_h * g.in_w) as isize,
            out_w,
            stride: (g.stride_h as isize, g.stride_w as isize),
            pad: (g.pad_h as isize, g.pad_w as isize),
            in_w,
        }
    }

    /// Tile `i` of the plan (`i < self.tiles`).
    fn tile(&self, i: usize) -> Tile {
        let class = self.classes.partition_point(|c| c.first_tile <= i) - 1;
        let positions = &self.classes[class].positions;
        let start = (i - self.classes[class].first_tile) * MR;
        let end = (start + MR).min(self.batch * positions.len());
        let mut tile = Tile { class, len: end - start, pixels: [(0, 0, 0); MR] };
        for (slot, idx) in tile.pixels.iter_mut().zip(start..end) {
            let (n, p) = (idx / positions.len(), positions[idx % positions.len()]);
            *slot = (n, p, self.origin(n, p));
        }
        tile
    }

    /// The input offset of tap (0, 0), channel 0, for output position `p` of image `n`.
    fn origin(&self, n: usize, p: usize) -> isize {
        let (oh, ow) = ((p / self.out_w) as isize, (p % self.out_w) as isize);
        let ih = oh * self.stride.0 - self.pad.0;
        let iw = ow * self.stride.1 - self.pad.1;
        n as isize * self.image + ih * self.in_w + iw
    }
}

/// y = finish(conv(x, w)), `w` packed by [`DirectWeights::pack`] (or `pack_flipped`). `y` is
/// overwritten.
pub(super) fn forward(g: &Conv2dGeometry, x: &[f32], w: &DirectWeights, finish: &ConvFinish<'_>, y: &mut [f32]) {
    assert!(w.fits(g) && x.len() >= g.input_len(), "direct conv: weights or input of another shape");
    let mut plan = Plan::new(g);
    let staged = stage_input(g, &plan, x);
    let x = match &staged {
        Some((stride, copy)) => {
            plan.image = *stride as isize;
            copy.as_slice()
        }
        None => x,
    };
    let channel_tiles = g.out_channels.div_ceil(NR);
    let target = task_target();
    // Channel blocks split first (each task then reads its weights once per tile row); pixel
    // ranges only when there are fewer channel blocks than tasks wanted.
    let channel_parts = channel_tiles.min(target);
    let pixel_parts = target.div_ceil(channel_parts).min(plan.tiles);
    let tasks: Vec<(Range<usize>, Range<usize>)> = super::even_ranges(channel_tiles, channel_parts)
        .into_iter()
        .flat_map(|c| super::even_ranges(plan.tiles, pixel_parts).into_iter().map(move |t| (c.clone(), t)))
        .collect();
    let out = SharedOut::new(&mut y[..g.output_len()]);
    tasks.into_par_iter().for_each(|(blocks, tiles)| {
        parallel::task(|| {
            for blk in blocks {
                for i in tiles.clone() {
                    let tile = plan.tile(i);
                    let acc = compute_tile(g, x, w, blk, &plan.classes[tile.class], &tile);
                    store_tile(g, finish, blk, &tile, &acc, &out);
                }
            }
        })
    });
    if let Some((_, copy)) = staged {
        buffers::recycle(copy);
    }
}

/// L1 data cache sets of 64-byte lines: 64 on the x86 cores the kernel runs on (32 KiB 8-way
/// and 48 KiB 12-way alike).
const L1_SETS: usize = 64;
/// Most lines of one tile's channel block that may share an L1 set (half the ways of the
/// smallest L1, leaving room for the weight stream).
const MAX_LINES_PER_SET: usize = 4;

/// A copy of `x` with a padded image stride, when the plan's tiles would otherwise thrash L1.
///
/// A class with one position per image (a corner) fills a tile with one pixel of each of
/// [`MR`] images. When an image's size is a multiple of 4 KiB (512 channels of 4x4 are 32 KiB)
/// those pixels' lines all fall in the same L1 set, and a 4x4 plane's corner tiles ran at half
/// speed (62 against 108 GFLOP/s a core). Shifting each image by a few lines spreads them;
/// copying the input costs one pass over it, so it is done only when such tiles are at least
/// an eighth of the pixels.
fn stage_input(g: &Conv2dGeometry, plan: &Plan, x: &[f32]) -> Option<(usize, Vec<f32>)> {
    let image = g.in_channels * g.in_h * g.in_w;
    let corner_pixels = plan.classes.iter().filter(|c| c.positions.len() == 1).count();
    let spread = corner_pixels * 8 >= plane_out(g);
    if !spread || crowded_set(image, g.in_h * g.in_w) <= MAX_LINES_PER_SET {
        return None;
    }
    // Shifts of whole lines, up to one per set (512 channels of 4x4 need four: with one, image
    // n + 1's channel c shares a set with image n's channel c + 1).
    let stride = (0..L1_SETS)
        .map(|lines| image.next_multiple_of(16) + 16 * lines)
        .find(|&s| crowded_set(s, g.in_h * g.in_w) <= MAX_LINES_PER_SET)?;
    let mut copy = buffers::uninit(g.batch * stride);
    copy.par_chunks_mut(stride).zip(x[..g.input_len()].par_chunks(image)).for_each(|(dst, src)| {
        dst[..image].copy_from_slice(src);
    });
    Some((stride, copy))
}

/// The most lines sharing one L1 set among those a corner tile reads for one channel block:
/// channel c of image n starts at float `n * image_stride + c * plane`.
fn crowded_set(image_stride: usize, plane: usize) -> usize {
    let mut per_set = [0usize; L1_SETS];
    for n in 0..MR {
        for c in 0..CHANNEL_BLOCK {
            per_set[((n * image_stride + c * plane) / 16) % L1_SETS] += 1;
        }
    }
    per_set.into_iter().max().unwrap_or(0)
}

/// One tile's sums: `acc[r][j]` for pixel r and output channel `blk * NR + j`.
fn compute_tile(
    g: &Conv2dGeometry,
    x: &[f32],
    w: &DirectWeights,
    blk: usize,
    class: &PixelClass,
    tile: &Tile,
) -> [[f32; NR]; MR] {
    let mut acc = [[0.0; NR]; MR];
    let origins: [isize; MR] = std::array::from_fn(|r| tile.pixels[r.min(tile.len - 1)].2);
    let shape = TileShape { hw: g.in_h * g.in_w, c_in: g.in_channels, taps: g.kernel_h * g.kernel_w };
    let weights = w.block(blk);
    // SAFETY: `applies` checked AVX-512F. Every read is in bounds: a pixel's origin plus a
    // tap of its class lands inside its own image's plane (the class holds only taps that meet
    // the input), channel offsets stay below C_in * H * W, and `weights` holds C_in * taps rows
    // of NR floats.
    unsafe { run_kernel(tile.len, x, &origins, &class.taps, shape, weights, &mut acc) };
    acc
}

/// The sizes a tile's loops need.
#[derive(Clone, Copy)]
struct TileShape {
    hw: usize,
    c_in: usize,
    taps: usize,
}

/// Writes a tile's sums, finished, to the output channels of block `blk` that exist.
fn store_tile(
    g: &Conv2dGeometry,
    finish: &ConvFinish<'_>,
    blk: usize,
    tile: &Tile,
    acc: &[[f32; NR]; MR],
    y: &SharedOut<'_>,
) {
    let plane = plane_out(g);
    let channels = blk * NR..(blk * NR + NR).min(g.out_channels);
    let plain = finish.is_identity();
    let value = |r: usize, j: usize, ch: usize| {
        let (n, p, _) = tile.pixels[r];
        if plain {
            acc[r][j]
        } else {
            finish.one(g, n, ch, p, acc[r][j])
        }
    };
    // SAFETY (both branches): tasks own disjoint (channel block, tile range) pairs and every
    // output pixel is in exactly one tile, so these elements are written by this task only.
    if tile.is_run() {
        let (n, p0, _) = tile.pixels[0];
        for (j, ch) in channels.clone().enumerate() {
            let run = unsafe { y.slice((n * g.out_channels + ch) * plane + p0, tile.len) };
            for (r, d) in run.iter_mut().enumerate() {
                *d = value(r, j, ch);
            }
        }
        return;
    }
    for r in 0..tile.len {
        let (n, p, _) = tile.pixels[r];
        let first = (n * g.out_channels + channels.start) * plane + p;
        for (j, ch) in channels.clone().enumerate() {
            unsafe { y.write(first + j * plane, value(r, j, ch)) };
        }
    }
}

/// Runs the kernel for the tile's first `rows` pixels; a tail tile's unused origins (copies of
/// its last pixel's) are never read.
///
/// # Safety
/// The CPU has AVX-512F, and every read the tile makes is inside `x` and `weights` (see
/// [`compute_tile`]).
#[cfg(target_arch = "x86_64")]
unsafe fn run_kernel(
    rows: usize,
    x: &[f32],
    origins: &[isize; MR],
    taps: &[(usize, isize)],
    shape: TileShape,
    weights: &[f32],
    acc: &mut [[f32; NR]; MR],
) {
    // Tail tiles compute only their own rows: one kernel per row count.
    macro_rules! by_rows {
        ($($r:literal)*) => {
            match rows {
                $($r => unsafe { avx512::tile::<$r>(x.as_ptr(), origins, taps, shape, weights.as_ptr(), acc) },)*
                _ => unreachable!("a tile has 1 to {MR} rows"),
            }
        };
    }
    by_rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn run_kernel(
    _rows: usize,
    _x: &[f32],
    _origins: &[isize; MR],
    _taps: &[(usize, isize)],
    _shape: TileShape,
    _weights: &[f32],
    _acc: &mut [[f32; NR]; MR],
) {
    unreachable!("the direct convolution only runs where `applies` found its kernel")
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{channel_blocks, TileShape, MR, NR};

    /// `sum[0] += row[at] * b0` and `sum[1] += row[at] * b1`, with `row[at]` broadcast inside
    /// each FMA (`{1to16}`), as the GEMM kernel does: one instruction fewer per pixel than a
    /// separate `vbroadcastss` (on Zen 4 the two measured the same). The address is formed
    /// inside the instructions: left to the compiler, each row's `row + at` became an induction
    /// variable of its own, and twelve of them were spilled and stored back every step.
    ///
    /// # Safety
    /// `row + at` is inside an allocation and the CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn fma_row(row: *const f32, at: usize, b0: __m512, b1: __m512, sum: &mut [__m512; 2]) {
        // SAFETY: the caller's contract; the instructions only read those 4 bytes.
        unsafe {
            std::arch::asm!(
                "vfmadd231ps {s0}, {b0}, dword ptr [{row} + {at} * 4]{{1to16}}",
                "vfmadd231ps {s1}, {b1}, dword ptr [{row} + {at} * 4]{{1to16}}",
                s0 = inout(zmm_reg) sum[0],
                s1 = inout(zmm_reg) sum[1],
                b0 = in(zmm_reg) b0,
                b1 = in(zmm_reg) b1,
                row = in(reg) row,
                at = in(reg) at,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
    }

    /// `acc[r][..] = sum over taps t, channels c of x[origin[r] + t + c * hw] * w[c, t][..]` for
    /// the first `R` rows, in `2 * R` zmm accumulators.
    ///
    /// # Safety
    /// The CPU has AVX-512F; for every row, tap and channel the input read is inside x, and
    /// `w` holds `c_in * taps` rows of [`NR`] floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const R: usize>(
        x: *const f32,
        origins: &[isize; MR],
        taps: &[(usize, isize)],
        shape: TileShape,
        w: *const f32,
        acc: &mut [[f32; NR]; MR],
    ) {
        let mut sum = [[_mm512_setzero_ps(); 2]; R];
        for cb in channel_blocks(shape.c_in) {
            let block_w = cb.start * shape.taps * NR;
            let channel0 = (cb.start * shape.hw) as isize;
            for &(t, offset) in taps {
                // SAFETY (all reads in this loop): the caller's contract.
                let rows: [*const f32; R] =
                    std::array::from_fn(|r| unsafe { x.offset(origins[r] + offset + channel0) });
                let mut wp = unsafe { w.add(block_w + t * cb.len() * NR) };
                for c in 0..cb.len() {
                    let at = c * shape.hw;
                    let (b0, b1) = unsafe { (_mm512_loadu_ps(wp), _mm512_loadu_ps(wp.add(16))) };
                    for r in 0..R {
                        unsafe { fma_row(rows[r], at, b0, b1, &mut sum[r]) };
                    }
                    wp = unsafe { wp.add(NR) };
                }
            }
        }
        for r in 0..R {
            // SAFETY: each row of `acc` holds NR = 32 floats.
            unsafe {
                _mm512_storeu_ps(acc[r].as_mut_ptr(), sum[r][0]);
                _mm512_storeu_ps(acc[r].as_mut_ptr().add(16), sum[r][1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(size: usize, stride: usize) -> Conv2dGeometry {
        Conv2dGeometry {
            batch: 3,
            in_channels: 2,
            out_channels: 5,
            in_h: size,
            in_w: size,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: stride,
            stride_w: stride,
            pad_h: 1,
            pad_w: 1,
        }
    }

    #[test]
    fn valid_taps_cut_the_kernel_at_the_borders() {
        // 4x4 input, 3x3 kernel, padding 1, stride 1: the first and last rows lose a tap.
        assert_eq!(valid_taps(0, 3, 1, 1, 4), 1..3);
        assert_eq!(valid_taps(1, 3, 1, 1, 4), 0..3);
        assert_eq!(valid_taps(3, 3, 1, 1, 4), 0..2);
        // 7 -> 4 at stride 2: output 3 reads inputs 5 and 6 only.
        assert_eq!(valid_taps(3, 3, 2, 1, 7), 0..2);
        // A 1-pixel input: only the centre tap.
        assert_eq!(valid_taps(0, 3, 1, 1, 1), 1..2);
    }

    #[test]
    fn plan_puts_every_pixel_in_one_tile_of_its_class() {
        let g = geometry(4, 1);
        let plan = Plan::new(&g);
        assert_eq!(plan.classes.len(), 9, "interior, four edges, four corners");
        let mut seen = vec![0; g.batch * 16];
        for tile in (0..plan.tiles).map(|i| plan.tile(i)) {
            for &(n, p, _) in &tile.pixels[..tile.len] {
                seen[n * 16 + p] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
        let interior = plan.classes.iter().filter(|c| c.taps.len() == 9).count();
        let corners = plan.classes.iter().filter(|c| c.taps.len() == 4).count();
        assert_eq!((interior, corners), (1, 4));
        // Each edge class holds 2 positions of each of the 3 images: one tile of 6.
        let edge = plan.classes.iter().position(|c| c.taps.len() == 6).unwrap();
        let tiles: Vec<Tile> = (0..plan.tiles).map(|i| plan.tile(i)).filter(|t| t.class == edge).collect();
        assert_eq!(tiles.len(), 1);
        assert_eq!(tiles[0].len, 6);
    }

    #[test]
    fn tiles_within_one_row_are_runs() {
        let g = Conv2dGeometry { batch: 1, ..geometry(16, 1) };
        let plan = Plan::new(&g);
        let interior = plan.classes.iter().position(|c| c.taps.len() == 9).unwrap();
        let first = plan.classes[interior].first_tile;
        // Row 1 holds interior positions 17..31 (14 pixels): the first tile is 17..29, the
        // second starts at 29 and wraps to row 2.
        let (a, b) = (plan.tile(first), plan.tile(first + 1));
        assert_eq!((a.pixels[0].1, a.len), (17, MR));
        assert!(a.is_run());
        assert_eq!(b.pixels[0].1, 29);
        assert!(!b.is_run());
        // Origins: the input one row up and one column left of the output position.
        assert_eq!((a.pixels[0].2, b.pixels[0].2), (0, 12));
    }

    #[test]
    fn packed_weights_follow_blocks_taps_and_channels() {
        let g = Conv2dGeometry { in_channels: 70, out_channels: 33, ..geometry(4, 1) };
        let k = 70 * 9;
        let w: Vec<f32> = (0..33 * k).map(|i| i as f32).collect();
        let packed = DirectWeights::pack(&g, &w);
        // Output channel 32 (block 1, lane 0), input channel 65 (the last channel block, from 64,
        // local 1, 6 channels long), tap 4.
        let block = packed.block(1);
        assert_eq!(block[(64 * 9 * NR) + (4 * 6 + 1) * NR], w[32 * k + 65 * 9 + 4]);
        // Lanes past C_out are zero.
        assert_eq!(block[(64 * 9 * NR) + (4 * 6 + 1) * NR + 1], 0.0);
        // Output channel 3, input channel 2, tap 7.
        assert_eq!(packed.block(0)[(7 * CHANNEL_BLOCK + 2) * NR + 3], w[3 * k + 2 * 9 + 7]);
    }

    #[test]
    fn flipped_packing_equals_packing_the_flipped_kernel() {
        let g = Conv2dGeometry { in_channels: 40, out_channels: 70, ..geometry(5, 1) };
        let w: Vec<f32> = (0..g.weight_len()).map(|i| (i as f32).sin()).collect();
        let mut flipped = vec![0.0; g.weight_len()];
        super::super::flipped::flip_weights(&g, &w, &mut flipped);
        let tg = super::super::flipped::transposed_geometry(&g);
        assert_eq!(DirectWeights::pack_flipped(&g, &w).data, DirectWeights::pack(&tg, &flipped).data);
    }

    #[test]
    fn corner_heavy_planes_of_whole_pages_read_a_padded_copy() {
        let wide = |size| Conv2dGeometry { in_channels: 64, batch: 2, ..geometry(size, 1) };
        let (g4, g7) = (wide(4), wide(7));
        let x4 = vec![0.5; g4.input_len()];
        let (stride, copy) = stage_input(&g4, &Plan::new(&g4), &x4).expect("64 x 4x4 is 4 KiB an image");
        assert!(stride > 64 * 16 && crowded_set(stride, 16) <= MAX_LINES_PER_SET);
        assert_eq!(copy[stride..stride + 64 * 16], x4[64 * 16..2 * 64 * 16]);
        // 7x7: corners are 4 of 49 pixels, not worth a copy.
        assert!(stage_input(&g7, &Plan::new(&g7), &vec![0.0; g7.input_len()]).is_none());
    }
}
