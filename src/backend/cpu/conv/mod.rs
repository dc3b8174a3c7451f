//! 2-D convolution on the CPU: forward, gradient w.r.t. input, weight and bias.
//!
//! Layouts: x [N, C_in, H, W], w [C_out, C_in, kh, kw], y [N, C_out, OH, OW]. With
//! K = C_in * kh * kw and the batch's output pixels laid end to end (Q = N * OH * OW):
//! - forward: Y[C_out x Q] = W[C_out x K] * cols[K x Q]
//! - backward input: cols = W^T * dY, then col2im adds the columns back into dx; with stride 1
//!   it is instead the forward convolution of dY with the flipped kernel ([`flipped`])
//! - backward weight: dW = dY * cols^T
//!
//! The forward never stores cols: the GEMM packs its B panels straight from x
//! ([`unrolled::UnrolledInput`], an implicit im2col). For the gradients, cols is built whole only
//! when small (at most 4 MB); otherwise each task unrolls a block of pixels and a band of rows
//! sized to stay in L2, in a per-thread scratch buffer reused across calls. Blocks span image
//! boundaries so late layers (7x7 outputs) still feed the GEMM wide matrices. A 1x1, stride-1,
//! unpadded conv reads the images directly as the GEMM operand (no unrolling).
//!
//! At the AVX-512 level, forwards of planes up to 56x56 with at least 64 input channels (which
//! includes stride-1 input gradients, as flipped forwards) skip the GEMM: [`direct`] sums each
//! output pixel over only the taps that meet the input, broadcasting x in place.
//!
//! Kernel taps that only ever meet padding (a 3x3 convolution of a 1x1 map) are dropped first
//! ([`cropped`]).
//!
//! Parallelism: with many pixels, tasks (pixel blocks x channel bands) run on rayon's pool, each
//! owning a disjoint part of the output and summing in a fixed order, so results do not depend
//! on scheduling. For one image, or few pixels (late layers at small batch), a single GEMM call
//! supplies the parallelism, and at batch 1 stores y itself with the fused epilogue.

mod cropped;
mod direct;
mod flipped;
mod im2col;
mod scratch;
mod unrolled;

use std::ops::Range;

use rayon::prelude::*;

use super::buffers;
use super::gemm::{pack_a, pack_a_for_call, sgemm, sgemm_with, AOperand, BOperand, Epilogue, MatRef, PackedA, RowNorm};
use super::parallel;
use super::simd::SimdLevel;
use crate::backend::geometry::Conv2dGeometry;
use im2col::{col2im, gather_rows, im2col, segments, Segment};
use scratch::{with_scratch, SharedOut, Slot};
use unrolled::UnrolledInput;

pub use direct::DirectWeights;

/// Bytes of scratch (column block plus GEMM output block) a task aims to keep in L2.
const BLOCK_BYTES: usize = 1 << 20;
/// Fewest pixels a block is cut to when splitting for parallelism.
const MIN_BLOCK: usize = 64;
/// Fewest pixels per GEMM call on the reduction side of the weight gradient, so the output
/// block's loads and stores stay small next to the multiply-adds.
const MIN_REDUCTION_BLOCK: usize = 256;
/// Column blocks are multiples of this (one AVX-512 vector pair), so GEMM tiles stay whole.
const BLOCK_ALIGN: usize = 32;
/// Largest unrolled matrix (floats) built whole for a single GEMM when pixels are few.
const WHOLE_MAX: usize = 1 << 20;

/// y = conv(x, w) + bias. `y` is overwritten.
pub fn conv2d_forward(level: SimdLevel, g: &Conv2dGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let finish = ConvFinish { bias, ..ConvFinish::default() };
    conv2d_forward_with(level, g, x, ConvWeights::new(w), &finish, y);
}

/// A convolution's weights: the `[C_out, C_in, kh, kw]` data, and optionally the same packed
/// once by [`pack_weights`] for this SIMD level (then `data` is not read by the path they were
/// packed for).
#[derive(Clone, Copy)]
pub struct ConvWeights<'a> {
    data: &'a [f32],
    gemm: Option<&'a PackedA>,
    direct: Option<&'a DirectWeights>,
}

/// Weights packed once for repeated forwards, in the form of the path that computes them.
pub enum PackedWeights {
    /// The GEMM's A operand.
    Gemm(PackedA),
    /// The direct small-plane kernel's layout.
    Direct(DirectWeights),
}

impl PackedWeights {
    /// Whether these are `g`'s weights packed at `level` for the path `g` takes there.
    pub fn fits(&self, level: SimdLevel, g: &Conv2dGeometry) -> bool {
        match self {
            PackedWeights::Gemm(p) => {
                !direct::applies(level, g)
                    && p.level() == level
                    && p.rows() == g.out_channels
                    && p.depth() == unrolled_len(g)
            }
            PackedWeights::Direct(d) => direct::applies(level, g) && d.fits(g),
        }
    }
}

impl<'a> ConvWeights<'a> {
    /// Unpacked weights.
    pub fn new(data: &'a [f32]) -> Self {
        ConvWeights { data, gemm: None, direct: None }
    }

    /// `data` together with its packed form.
    pub fn prepacked(data: &'a [f32], packed: &'a PackedWeights) -> Self {
        match packed {
            PackedWeights::Gemm(p) => ConvWeights { data, gemm: Some(p), direct: None },
            PackedWeights::Direct(d) => ConvWeights { data, gemm: None, direct: Some(d) },
        }
    }

    /// `data` with its GEMM-packed form (rows of W, or of W^T for the input gradient).
    fn with_gemm(data: &'a [f32], packed: Option<&'a PackedA>) -> Self {
        ConvWeights { data, gemm: packed, direct: None }
    }

    fn rows(&self, co: &Range<usize>, k: usize) -> AOperand<'a> {
        match self.gemm {
            Some(packed) => AOperand::Packed { packed, first_row: co.start },
            None => AOperand::Matrix(MatRef::normal(&self.data[co.start * k..], k)),
        }
    }
}

/// What a forward convolution does to the product before storing it, in order: `+ bias[c]`,
/// an eval-mode batch norm per output channel, `+ residual` (same shape as the output), then
/// ReLU. Fused here (inference), they cost no pass over memory of their own.
#[derive(Clone, Copy, Default)]
pub struct ConvFinish<'a> {
    pub bias: Option<&'a [f32]>,
    pub norm: Option<RowNorm<'a>>,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl ConvFinish<'_> {
    /// The same steps for the GEMM's store, when C is the output itself (one image, `q` pixels).
    fn epilogue(&self, q: usize) -> Epilogue<'_> {
        Epilogue { row_bias: self.bias, row_norm: self.norm, residual: self.residual.map(|r| (r, q)), relu: self.relu }
    }

    /// Writes `src` (output channel `ch` of image `n`, pixels `p0 ..`) finished into `dst`.
    fn store(&self, g: &Conv2dGeometry, n: usize, ch: usize, p0: usize, src: &[f32], dst: &mut [f32]) {
        let b = self.bias.map_or(0.0, |b| b[ch]);
        let norm = self.norm.map(|nm| (nm.mean[ch], nm.scale[ch], nm.shift[ch]));
        let finish = |v: f32| match norm {
            Some((mean, scale, shift)) => (v + b - mean) * scale + shift,
            None => v + b,
        };
        match self.residual {
            Some(res) => {
                let res = &res[(n * g.out_channels + ch) * plane_out(g) + p0..][..src.len()];
                for ((d, v), r) in dst.iter_mut().zip(src).zip(res) {
                    *d = self.activate(finish(*v) + r);
                }
            }
            None => {
                for (d, v) in dst.iter_mut().zip(src) {
                    *d = self.activate(finish(*v));
                }
            }
        }
    }

    /// Whether finishing leaves the sums as they are.
    fn is_identity(&self) -> bool {
        self.bias.is_none() && self.norm.is_none() && self.residual.is_none() && !self.relu
    }

    /// Output channel `ch` of image `n` at pixel `p`, finished from its sum `v`: the same
    /// arithmetic as [`ConvFinish::store`], one element at a time.
    fn one(&self, g: &Conv2dGeometry, n: usize, ch: usize, p: usize, v: f32) -> f32 {
        let v = v + self.bias.map_or(0.0, |b| b[ch]);
        let v = match self.norm {
            Some(nm) => (v - nm.mean[ch]) * nm.scale[ch] + nm.shift[ch],
            None => v,
        };
        match self.residual {
            Some(res) => self.activate(v + res[(n * g.out_channels + ch) * plane_out(g) + p]),
            None => self.activate(v),
        }
    }

    #[inline(always)]
    fn activate(&self, v: f32) -> f32 {
        // NaN survives, as the ReLU op keeps it.
        if self.relu && v < 0.0 {
            0.0
        } else {
            v
        }
    }
}

/// Packs a convolution's weights for repeated forwards, in the form of the path `g` takes at
/// `level`: the direct kernel's layout, or `[C_out x C_in*kh*kw]` as the GEMM's A.
pub fn pack_weights(level: SimdLevel, g: &Conv2dGeometry, w: &[f32]) -> PackedWeights {
    if direct::applies(level, g) {
        return PackedWeights::Direct(DirectWeights::pack(g, w));
    }
    let k = unrolled_len(g);
    PackedWeights::Gemm(pack_a(level, g.out_channels, k, MatRef::normal(w, k)))
}

/// y = finish(conv(x, w)). `y` is overwritten; `finish.residual`, if any, has y's length.
pub fn conv2d_forward_with(
    level: SimdLevel,
    g: &Conv2dGeometry,
    x: &[f32],
    w: ConvWeights<'_>,
    finish: &ConvFinish<'_>,
    y: &mut [f32],
) {
    let (q_total, c_out) = (g.batch * plane_out(g), g.out_channels);
    if q_total == 0 || c_out == 0 {
        return;
    }
    if direct::applies(level, g) {
        let packed_here;
        let packed = match w.direct {
            Some(d) => d,
            None => {
                packed_here = DirectWeights::pack(g, w.data);
                &packed_here
            }
        };
        direct::forward(g, x, packed, finish, y);
        return;
    }
    if let Some(packed) = w.gemm {
        assert!(packed.rows() == c_out && packed.depth() == unrolled_len(g), "conv2d: packed weights of another shape");
    } else if let Some((crop, small)) = cropped::crop(g) {
        let w_small = crop.weights(g, w.data);
        conv2d_forward_with(level, &small, x, ConvWeights::new(&w_small), finish, y);
        return;
    }
    let k = unrolled_len(g);
    let target = task_target();
    // Blocks sized as if their columns were stored next to their output: measured faster than
    // blocks sized by the output alone, although the GEMM now unrolls x as it packs.
    let budget_blocks = q_total.div_ceil((BLOCK_BYTES / 4 / (k + c_out)).max(MIN_BLOCK));
    // One image is always one product: the GEMM then stores y itself, finished tile by tile.
    if g.batch == 1 || (budget_blocks < target && k * q_total <= WHOLE_MAX) {
        forward_whole(level, g, x, w, finish, y);
        return;
    }
    // A block count that is a multiple of the thread count, so no thread idles at the end.
    let nq = if budget_blocks < 4 * target { budget_blocks.next_multiple_of(target) } else { budget_blocks };
    let blocks = ranges(q_total, block_len(q_total, q_total.div_ceil(nq).max(MIN_BLOCK)));
    // Every block multiplies by the same weights: pack them once for the call rather than once
    // per block inside its GEMM (for layer4 at batch 32, 9 MB of weights for every 64 pixels).
    let packed_here;
    let w = match w.gemm {
        None if blocks.len() > 1 => {
            let k = unrolled_len(g);
            packed_here = pack_a_for_call(level, g.out_channels, k, MatRef::normal(w.data, k));
            ConvWeights::with_gemm(w.data, Some(&packed_here))
        }
        _ => w,
    };
    let parts = target.div_ceil(blocks.len()).min(c_out.div_ceil(16));
    // Packed weights can only be cut between panels.
    let align = w.gemm.map_or(1, |p| p.panel_rows());
    let groups = aligned_ranges(c_out, parts, align);
    let tasks: Vec<(Range<usize>, Range<usize>)> =
        blocks.iter().flat_map(|b| groups.iter().map(move |c| (b.clone(), c.clone()))).collect();
    let out = SharedOut::new(&mut y[..g.output_len()]);
    tasks.into_par_iter().for_each(|(q, co)| parallel::task(|| forward_block(level, g, x, w, finish, q, co, &out)));
}

/// Forward for one image, or few output pixels (late layers at small batch): one GEMM, parallel
/// inside, covers every output channel and pixel, unrolling x as it packs. Splitting tasks by
/// output channel instead would unroll the same columns once per task.
fn forward_whole(
    level: SimdLevel,
    g: &Conv2dGeometry,
    x: &[f32],
    w: ConvWeights<'_>,
    finish: &ConvFinish<'_>,
    y: &mut [f32],
) {
    let (k, plane, c_out) = (unrolled_len(g), plane_out(g), g.out_channels);
    let q = g.batch * plane;
    let segs = segments(0..q, plane);
    let unrolled = UnrolledInput::new(level, g, x, 0);
    let b = if is_pointwise(g) && g.batch == 1 {
        BOperand::Matrix(MatRef::normal(x, plane))
    } else {
        BOperand::Panels(&unrolled)
    };
    let a = w.rows(&(0..c_out), k);
    if g.batch == 1 {
        // One image: the GEMM's [C_out x pixels] result is y itself, finished tile by tile.
        sgemm_with(level, c_out, q, k, a, b, 0.0, y, q, &finish.epilogue(q));
        return;
    }
    with_scratch(Slot::Out, c_out * q, |c| {
        sgemm_with(level, c_out, q, k, a, b, 0.0, c, q, &Epilogue::NONE);
        for s in &segs {
            for ch in 0..c_out {
                let dst = &mut y[(s.n * c_out + ch) * plane..][..plane];
                finish.store(g, s.n, ch, 0, &c[ch * q + s.col..][..s.len], dst);
            }
        }
    });
}

/// One forward task: output channels `co` for batch pixels `q`.
#[allow(clippy::too_many_arguments)]
fn forward_block(
    level: SimdLevel,
    g: &Conv2dGeometry,
    x: &[f32],
    w: ConvWeights<'_>,
    finish: &ConvFinish<'_>,
    q: Range<usize>,
    co: Range<usize>,
    y: &SharedOut<'_>,
) {
    let (k, plane) = (unrolled_len(g), plane_out(g));
    let segs = segments(q.clone(), plane);
    let (nb, mc) = (q.len(), co.len());
    let a = w.rows(&co, k);
    let unrolled = UnrolledInput::new(level, g, x, q.start);
    with_scratch(Slot::Out, mc * nb, |c| {
        let b = match segs.as_slice() {
            [s] if is_pointwise(g) => BOperand::Matrix(MatRef::normal(&x[s.n * g.in_channels * plane + s.p0..], plane)),
            _ => BOperand::Panels(&unrolled),
        };
        sgemm_with(level, mc, nb, k, a, b, 0.0, c, nb, &Epilogue::NONE);
        for s in &segs {
            for (i, ch) in co.clone().enumerate() {
                let src = &c[i * nb + s.col..][..s.len];
                // SAFETY: tasks own disjoint (pixel range, channel range) pairs, so this row
                // piece of y is written by this task only.
                let dst = unsafe { y.slice((s.n * g.out_channels + ch) * plane + s.p0, s.len) };
                finish.store(g, s.n, ch, s.p0, src, dst);
            }
        }
    });
}

/// dx = conv_transpose(dy, w). `dx` is overwritten.
pub fn conv2d_backward_input(level: SimdLevel, g: &Conv2dGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let plane = plane_out(g);
    if g.input_len() == 0 {
        return;
    }
    if plane == 0 || g.out_channels == 0 {
        dx[..g.input_len()].fill(0.0);
        return;
    }
    if let Some((crop, small)) = cropped::crop(g) {
        conv2d_backward_input(level, &small, dy, &crop.weights(g, w), dx);
        return;
    }
    if flipped::applies(g) && flipped::pays(g) {
        let transposed = flipped::transposed_geometry(g);
        if direct::applies(level, &transposed) {
            let packed = DirectWeights::pack_flipped(g, w);
            direct::forward(&transposed, dy, &packed, &ConvFinish::default(), dx);
            return;
        }
        let mut w_flipped = buffers::uninit(g.weight_len());
        flipped::flip_weights(g, w, &mut w_flipped);
        let weights = ConvWeights::new(&w_flipped);
        conv2d_forward_with(level, &transposed, dy, weights, &ConvFinish::default(), dx);
        buffers::recycle(w_flipped);
        return;
    }
    // Images are grouped so each task sees at least a few hundred pixels; col2im of one image's
    // channels must stay within one task because neighbouring pixels overlap in dx.
    let per_group = MIN_REDUCTION_BLOCK.div_ceil(plane).min(g.batch);
    let images = ranges(g.batch, per_group);
    let target = task_target();
    // W^T is the A operand of every task's products. With several image groups reading the same
    // rows it is packed once here rather than once per product (for layer4 at batch 32 that was
    // 9 MB packed for every 64 pixels). With one image the tasks' products pack their own rows
    // into L2, which beats streaming a shared copy from L3. A task's rows (its input channels
    // times kh * kw) must start on a panel of the shared copy.
    let (k, kk) = (unrolled_len(g), g.kernel_h * g.kernel_w);
    let w_t = (images.len() > 1).then(|| pack_a_for_call(level, k, g.out_channels, MatRef::transposed(w, k)));
    let align = w_t.as_ref().map_or(1, |p| p.panel_rows() / gcd(kk, p.panel_rows()));
    let chans = aligned_ranges(g.in_channels, target.div_ceil(images.len()).min(g.in_channels), align);
    let tasks: Vec<(Range<usize>, Range<usize>)> =
        images.iter().flat_map(|n| chans.iter().map(move |c| (n.clone(), c.clone()))).collect();
    let out = SharedOut::new(&mut dx[..g.input_len()]);
    let w = ConvWeights::with_gemm(w, w_t.as_ref());
    tasks.into_par_iter().for_each(|(n, ci)| parallel::task(|| backward_input_task(level, g, dy, w, n, ci, &out)));
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One backward-input task: input channels `ci` of images `n`.
fn backward_input_task(
    level: SimdLevel,
    g: &Conv2dGeometry,
    dy: &[f32],
    w: ConvWeights<'_>,
    n: Range<usize>,
    ci: Range<usize>,
    dx: &SharedOut<'_>,
) {
    let (k, plane, hw) = (unrolled_len(g), plane_out(g), g.in_h * g.in_w);
    let kk = g.kernel_h * g.kernel_w;
    let rows = ci.start * kk..ci.end * kk;
    let m = rows.len();
    // Rows `rows` of W^T, i.e. columns of W; `w.gemm`, if any, holds W^T packed.
    let a = match w.gemm {
        Some(packed) => AOperand::Packed { packed, first_row: rows.start },
        None => AOperand::Matrix(MatRef::transposed(&w.data[rows.start..], k)),
    };
    // SAFETY (for every `dx.slice` below): tasks own disjoint (image range, channel range)
    // pairs, and within an image the channels `ci` are one contiguous run of planes.
    let planes = |n: usize| unsafe { dx.slice((n * g.in_channels + ci.start) * hw, ci.len() * hw) };
    if is_pointwise(g) {
        for img in n {
            let b = MatRef::normal(&dy[img * g.out_channels * plane..], plane);
            sgemm_with(
                level,
                m,
                plane,
                g.out_channels,
                a,
                BOperand::Matrix(b),
                0.0,
                planes(img),
                plane,
                &Epilogue::NONE,
            );
        }
        return;
    }
    for img in n.clone() {
        planes(img).fill(0.0);
    }
    let q = n.start * plane..n.end * plane;
    let nb = block_len(q.len(), (BLOCK_BYTES / 4 / (m + g.out_channels)).max(MIN_BLOCK));
    for blk in ranges(q.len(), nb) {
        let segs = segments(q.start + blk.start..q.start + blk.end, plane);
        with_scratch(Slot::Cols, m * blk.len(), |cols| {
            with_dy_block(g, dy, &segs, |b| {
                sgemm_with(
                    level,
                    m,
                    blk.len(),
                    g.out_channels,
                    a,
                    BOperand::Matrix(b),
                    0.0,
                    cols,
                    blk.len(),
                    &Epilogue::NONE,
                )
            });
            for s in &segs {
                col2im(g, cols, blk.len(), ci.clone(), s, planes(s.n));
            }
        });
    }
}

/// dw = correlation of x with dy, summed over the batch. `dw` is overwritten.
pub fn conv2d_backward_weight(level: SimdLevel, g: &Conv2dGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (k, c_out, q_total) = (unrolled_len(g), g.out_channels, g.batch * plane_out(g));
    if g.weight_len() == 0 {
        return;
    }
    let dw = &mut dw[..g.weight_len()];
    if q_total == 0 {
        dw.fill(0.0);
        return;
    }
    if let Some((crop, small)) = cropped::crop(g) {
        let mut dw_small = vec![0.0; small.weight_len()];
        conv2d_backward_weight(level, &small, x, dy, &mut dw_small);
        crop.expand_weight_grad(g, &dw_small, dw);
        return;
    }
    // The whole path holds all of cols and, across images, a gathered copy of dY: with few
    // unrolled rows but many pixels (a 1-channel stem at batch 128) the copy of dY would dominate.
    if (k + c_out) * q_total <= WHOLE_MAX {
        weight_whole(level, g, x, dy, dw);
        return;
    }
    let target = task_target();
    // Splitting pixels packs dY and x once each but adds a partial dW per task; the other
    // splits pack dY or x once per task. Pixels win for pointwise convolutions (x is read in
    // place) and where the repacked dY is worth saving: larger than the partials (not late
    // layers at small batch) and not negligible next to the unrolled x (not DenseNet's 3x3
    // convolutions with 32 output channels, where the partials' extra traffic measured slower).
    let saved = (target - 1) * c_out * q_total;
    if is_pointwise(g) || (saved > target * c_out * k && 8 * saved > k * q_total) {
        weight_by_pixels(level, g, x, dy, dw, target);
        return;
    }
    // Tasks split either output channels (rows of dW: written in place, but every task unrolls
    // all of x) or unrolled rows (each unrolled once, but summed in a scratch accumulator and
    // copied out). Take whichever moves fewer floats; both sum the batch in a fixed order.
    let unroll = k * q_total;
    if c_out >= target && target * unroll <= 2 * c_out * k + unroll {
        let out = SharedOut::new(dw);
        even_ranges(c_out, target).into_par_iter().for_each(|co| {
            // SAFETY: the channel bands are disjoint, so these rows of dW belong to this task.
            let dst = unsafe { out.slice(co.start * k, co.len() * k) };
            parallel::task(|| weight_band(level, g, x, dy, 0..k, co, dst));
        });
        return;
    }
    // Bands are the GEMM's columns: whole 32-column tiles, so no band ends in a half-empty one.
    let bands = aligned_ranges(k, target.min(k.div_ceil(16)), BLOCK_ALIGN);
    let out = SharedOut::new(dw);
    bands.into_par_iter().for_each(|rows| {
        let m = rows.len();
        parallel::task(|| {
            with_scratch(Slot::Out, c_out * m, |acc| {
                weight_band(level, g, x, dy, rows.clone(), 0..c_out, acc);
                for co in 0..c_out {
                    // SAFETY: tasks own disjoint column bands `rows`, so this row piece of dW is
                    // written by this task only.
                    let dst = unsafe { out.slice(co * k + rows.start, m) };
                    dst.copy_from_slice(&acc[co * m..][..m]);
                }
            })
        });
    });
}

/// Weight gradient for few output pixels: x is unrolled once for the whole batch (in
/// parallel) and one GEMM, parallel inside, writes dW in place.
fn weight_whole(level: SimdLevel, g: &Conv2dGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (k, plane, c_out) = (unrolled_len(g), plane_out(g), g.out_channels);
    let q = g.batch * plane;
    let segs = segments(0..q, plane);
    with_scratch(Slot::Cols, k * q, |cols| {
        let band = k.div_ceil(task_target());
        cols.par_chunks_mut(band * q).enumerate().for_each(|(i, c)| {
            im2col(g, x, i * band..i * band + c.len() / q, &segs, c, q);
        });
        with_dy_block(g, dy, &segs, |a| {
            sgemm(level, c_out, k, q, a, MatRef::transposed(cols, q), 0.0, dw, k);
        });
    });
}

/// Weight gradient with tasks splitting the pixels (split-K): each task sums its share of the
/// pixel blocks into a partial dW of its own, and the partials are added in task order, so the
/// result does not depend on scheduling. Splitting output channels instead would transpose-pack
/// all of x once per task (DenseNet's 1x1 convolutions at 56x56: four times 160 x 50176 floats
/// for a 128 x 160 result).
fn weight_by_pixels(level: SimdLevel, g: &Conv2dGeometry, x: &[f32], dy: &[f32], dw: &mut [f32], parts: usize) {
    let (k, c_out) = (unrolled_len(g), g.out_channels);
    let blocks = weight_pixel_blocks(g, k, c_out);
    let shares = even_ranges(blocks.len(), parts);
    let len = c_out * k;
    let mut partials = buffers::uninit(len * (shares.len() - 1));
    // Share 0 writes dW itself; the others write their own partial.
    let outs: Vec<&mut [f32]> = std::iter::once(&mut *dw).chain(partials.chunks_exact_mut(len)).collect();
    outs.into_par_iter().zip(shares).for_each(|(out, share)| {
        parallel::task(|| weight_blocks(level, g, x, dy, 0..k, 0..c_out, &blocks[share], out))
    });
    for partial in partials.chunks_exact(len) {
        dw.iter_mut().zip(partial).for_each(|(d, &p)| *d += p);
    }
    buffers::recycle(partials);
}

/// dW[co, rows] (into `c`, row stride `rows.len()`) = sum over all pixel blocks of
/// dY_blk[co] * cols_blk[rows]^T, the first block overwriting.
fn weight_band(
    level: SimdLevel,
    g: &Conv2dGeometry,
    x: &[f32],
    dy: &[f32],
    rows: Range<usize>,
    co: Range<usize>,
    c: &mut [f32],
) {
    let blocks = weight_pixel_blocks(g, rows.len(), co.len());
    weight_blocks(level, g, x, dy, rows, co, &blocks, c);
}

/// The pixel blocks of a weight-gradient product computing `m` unrolled rows for `mc` output
/// channels: sized so a block's columns and dY rows fit [`BLOCK_BYTES`].
fn weight_pixel_blocks(g: &Conv2dGeometry, m: usize, mc: usize) -> Vec<Range<usize>> {
    let want = (BLOCK_BYTES / 4 / (m + mc)).max(MIN_REDUCTION_BLOCK);
    reduction_blocks(g.batch, plane_out(g), want)
}

/// [`weight_band`] summed over the pixel blocks `blocks` only, the first overwriting `c`.
#[allow(clippy::too_many_arguments)]
fn weight_blocks(
    level: SimdLevel,
    g: &Conv2dGeometry,
    x: &[f32],
    dy: &[f32],
    rows: Range<usize>,
    co: Range<usize>,
    blocks: &[Range<usize>],
    c: &mut [f32],
) {
    let (plane, m, mc) = (plane_out(g), rows.len(), co.len());
    for (i, blk) in blocks.iter().cloned().enumerate() {
        let beta = if i == 0 { 0.0 } else { 1.0 };
        let segs = segments(blk.clone(), plane);
        let len = blk.len();
        with_dy_block(g, dy, &segs, |a| {
            let a = MatRef { data: &a.data[co.start * a.ld..], ..a };
            if is_pointwise(g) && segs.len() == 1 {
                let s = segs[0];
                let xb = &x[(s.n * g.in_channels + rows.start) * plane + s.p0..];
                sgemm(level, mc, m, len, a, MatRef::transposed(xb, plane), beta, c, m);
            } else {
                with_scratch(Slot::Cols, m * len, |cols| {
                    im2col(g, x, rows.clone(), &segs, cols, len);
                    sgemm(level, mc, m, len, a, MatRef::transposed(cols, len), beta, c, m);
                });
            }
        });
    }
}

/// Calls `f` with dY restricted to the pixels of `segs` as a [C_out x pixels] GEMM operand: read
/// in place when the block lies in one image, else gathered into scratch.
fn with_dy_block<R>(g: &Conv2dGeometry, dy: &[f32], segs: &[Segment], f: impl FnOnce(MatRef<'_>) -> R) -> R {
    let (plane, c_out) = (plane_out(g), g.out_channels);
    if let [s] = segs {
        return f(MatRef::normal(&dy[s.n * c_out * plane + s.p0..], plane));
    }
    let len: usize = segs.iter().map(|s| s.len).sum();
    with_scratch(Slot::Gather, c_out * len, |blk| {
        gather_rows(dy, c_out, plane, 0..c_out, segs, blk, len);
        f(MatRef::normal(blk, len))
    })
}

/// db[c] = sum of dy over batch and pixels. `db` is overwritten.
pub fn conv2d_backward_bias(g: &Conv2dGeometry, dy: &[f32], db: &mut [f32]) {
    let plane = plane_out(g);
    for (co, d) in db[..g.out_channels].iter_mut().enumerate() {
        // f64 sums: a channel of a large batch adds up millions of terms.
        let sum: f64 = (0..g.batch)
            .map(|n| {
                let start = (n * g.out_channels + co) * plane;
                dy[start..start + plane].iter().map(|&v| f64::from(v)).sum::<f64>()
            })
            .sum();
        *d = sum as f32;
    }
}

/// A 1x1, stride-1, unpadded conv: the image itself is the unrolled matrix.
fn is_pointwise(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0
}

/// Rows of the unrolled matrix: C_in * kh * kw.
fn unrolled_len(g: &Conv2dGeometry) -> usize {
    g.in_channels * g.kernel_h * g.kernel_w
}

/// Output pixels per image and channel.
fn plane_out(g: &Conv2dGeometry) -> usize {
    g.out_h() * g.out_w()
}

/// How many tasks to aim for: a few per thread so a busy core (the machine is shared) does not
/// hold up the others.
fn task_target() -> usize {
    let threads = rayon::current_num_threads();
    if threads <= 1 {
        1
    } else {
        2 * threads
    }
}

/// A block length near `want`, rounded up to `BLOCK_ALIGN`, and at most `total`.
fn block_len(total: usize, want: usize) -> usize {
    want.div_ceil(BLOCK_ALIGN).saturating_mul(BLOCK_ALIGN).clamp(1, total.max(1))
}

/// The pixel blocks (over all `batch * plane` output pixels) a weight gradient sums, each near
/// `want` long. Planes of at least [`MIN_REDUCTION_BLOCK`] pixels are cut within images, so each
/// block's dY rows are read in place; crossing an image boundary would gather them into scratch
/// first. Smaller planes are grouped several images to a block.
fn reduction_blocks(batch: usize, plane: usize, want: usize) -> Vec<Range<usize>> {
    if plane < MIN_REDUCTION_BLOCK {
        let total = batch * plane;
        return ranges(total, block_len(total, want));
    }
    let pieces = plane.div_ceil(want);
    let len = plane.div_ceil(pieces);
    (0..batch)
        .flat_map(|n| ranges(plane, len).into_iter().map(move |r| n * plane + r.start..n * plane + r.end))
        .collect()
}

/// `0..total` cut into pieces of `len` (the last one shorter).
fn ranges(total: usize, len: usize) -> Vec<Range<usize>> {
    (0..total).step_by(len.max(1)).map(|s| s..(s + len).min(total)).collect()
}

/// `0..total` cut into about `parts` pieces whose boundaries are multiples of `align`.
fn aligned_ranges(total: usize, parts: usize, align: usize) -> Vec<Range<usize>> {
    let units = total.div_ceil(align);
    even_ranges(units, parts).into_iter().map(|r| r.start * align..(r.end * align).min(total)).collect()
}

/// `0..total` cut into `parts` pieces of nearly equal length (fewer if `total` is smaller).
fn even_ranges(total: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, total.max(1));
    (0..parts).map(|i| i * total / parts..(i + 1) * total / parts).filter(|r| !r.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers_in_order(blocks: &[Range<usize>], total: usize) -> bool {
        blocks.first().is_none_or(|b| b.start == 0)
            && blocks.windows(2).all(|w| w[0].end == w[1].start)
            && blocks.last().map_or(total == 0, |b| b.end == total)
    }

    #[test]
    fn reduction_blocks_stay_within_images_when_planes_are_large() {
        for (batch, plane, want) in [(3, 3136, 1260), (2, 784, 1260), (4, 300, 256), (5, 1000, 999)] {
            let blocks = reduction_blocks(batch, plane, want);
            assert!(covers_in_order(&blocks, batch * plane), "{batch}x{plane}: {blocks:?}");
            for b in &blocks {
                assert_eq!(b.start / plane, (b.end - 1) / plane, "{b:?} crosses an image of {plane} pixels");
                assert!(b.len() <= want.max(plane.div_ceil(plane.div_ceil(want))), "{b:?} longer than {want}");
            }
        }
        // 3136 pixels at about 1260 a block: three balanced pieces per image.
        assert_eq!(reduction_blocks(1, 3136, 1260), [0..1046, 1046..2092, 2092..3136]);
    }

    #[test]
    fn reduction_blocks_group_small_planes_across_images() {
        let blocks = reduction_blocks(32, 49, 600);
        assert!(covers_in_order(&blocks, 32 * 49));
        assert!(blocks.iter().all(|b| b.len() >= 600 || b.end == 32 * 49), "{blocks:?}");
    }
}
