//! Moving between NCHW images and column blocks: im2col (gather), col2im (scatter-add) and the
//! plain copies of output-shaped blocks.
//!
//! A column block holds some rows of the unrolled kernel dimension (row r = (c * kh + ky) * kw +
//! kx) for a run of output pixels that may span several images. Pixel q of the whole batch is
//! pixel q % (OH * OW) of image q / (OH * OW); a block covers a contiguous range of q.

use std::ops::Range;

use crate::backend::geometry::Conv2dGeometry;

/// The part of a pixel block that lies in one image: output pixels `p0..p0 + len` of image `n`,
/// stored from column `col` of the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub n: usize,
    pub p0: usize,
    pub len: usize,
    pub col: usize,
}

/// Splits the batch-wide pixel range `q` into per-image segments (`plane` = OH * OW).
pub(super) fn segments(q: Range<usize>, plane: usize) -> Vec<Segment> {
    if q.is_empty() {
        return Vec::new();
    }
    (q.start / plane..=(q.end - 1) / plane)
        .map(|n| {
            let a = q.start.max(n * plane);
            let b = q.end.min((n + 1) * plane);
            Segment { n, p0: a - n * plane, len: b - a, col: a - q.start }
        })
        .collect()
}

/// The output positions `lo..hi` (along one axis) whose input position `o * stride + k - pad`
/// falls inside `0..in_len`.
pub(super) fn valid_range(k: usize, pad: usize, stride: usize, in_len: usize, out_len: usize) -> (usize, usize) {
    let lo = if k >= pad { 0 } else { (pad - k).div_ceil(stride) };
    let hi = if in_len + pad <= k { 0 } else { ((in_len - 1 + pad - k) / stride + 1).min(out_len) };
    (lo.min(out_len), hi.max(lo.min(out_len)))
}

/// The kernel offsets of unrolled row `r`: (input channel, ky, kx).
fn split_row(g: &Conv2dGeometry, r: usize) -> (usize, usize, usize) {
    let kk = g.kernel_h * g.kernel_w;
    (r / kk, (r % kk) / g.kernel_w, r % g.kernel_w)
}

/// One unrolled row (tap ky, kx) for output pixels `p0..p0 + dst.len()` of one image, walked
/// output row by output row: zeros where the window hangs over the padding, else a strided
/// read of the input row.
fn im2col_strided(g: &Conv2dGeometry, plane: &[f32], ky: usize, kx: usize, p0: usize, dst: &mut [f32]) {
    let (ow, sw) = (g.out_w(), g.stride_w);
    let (ylo, yhi) = valid_range(ky, g.pad_h, g.stride_h, g.in_h, g.out_h());
    let (xlo, xhi) = valid_range(kx, g.pad_w, sw, g.in_w, ow);
    let end = p0 + dst.len();
    let mut rest = dst;
    let mut p = p0;
    while p < end {
        let (oy, ox0) = (p / ow, p % ow);
        let n = (ow - ox0).min(end - p);
        let (d, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        p += n;
        if !(ylo..yhi).contains(&oy) {
            d.fill(0.0);
            continue;
        }
        let row = &plane[(oy * g.stride_h + ky - g.pad_h) * g.in_w..][..g.in_w];
        let a = xlo.clamp(ox0, ox0 + n);
        let b = xhi.clamp(a, ox0 + n);
        let (head, d) = d.split_at_mut(a - ox0);
        let (mid, end_zeros) = d.split_at_mut(b - a);
        head.iter_mut().for_each(|v| *v = 0.0);
        end_zeros.iter_mut().for_each(|v| *v = 0.0);
        if mid.is_empty() {
            continue;
        }
        // Input column of output column `a`, inside the row by the choice of `a..b`.
        let src = &row[a * sw + kx - g.pad_w..];
        match sw {
            1 => mid.copy_from_slice(&src[..mid.len()]),
            2 => mid.iter_mut().zip(src.chunks(2)).for_each(|(v, pair)| *v = pair[0]),
            _ => mid.iter_mut().zip(src.iter().step_by(sw)).for_each(|(v, x)| *v = *x),
        }
    }
}

/// The inverse of `im2col_strided`: adds one unrolled row into the plane where the window is
/// inside the image.
fn col2im_strided(g: &Conv2dGeometry, src: &[f32], ky: usize, kx: usize, p0: usize, plane: &mut [f32]) {
    let (ow, sw) = (g.out_w(), g.stride_w);
    let (ylo, yhi) = valid_range(ky, g.pad_h, g.stride_h, g.in_h, g.out_h());
    let (xlo, xhi) = valid_range(kx, g.pad_w, sw, g.in_w, ow);
    let end = p0 + src.len();
    let mut p = p0;
    while p < end {
        let (oy, ox0) = (p / ow, p % ow);
        let n = (ow - ox0).min(end - p);
        let piece = &src[p - p0..p - p0 + n];
        p += n;
        let a = xlo.clamp(ox0, ox0 + n);
        let b = xhi.clamp(a, ox0 + n);
        if !(ylo..yhi).contains(&oy) || a == b {
            continue;
        }
        let row_start = (oy * g.stride_h + ky - g.pad_h) * g.in_w;
        // Input column of output column `a`, inside the row by the choice of `a..b`.
        let dst = &mut plane[row_start + a * sw + kx - g.pad_w..row_start + g.in_w];
        let vals = &piece[a - ox0..b - ox0];
        match sw {
            1 => dst.iter_mut().zip(vals).for_each(|(d, v)| *d += v),
            2 => dst.chunks_mut(2).zip(vals).for_each(|(pair, v)| pair[0] += v),
            _ => dst.iter_mut().step_by(sw).zip(vals).for_each(|(d, v)| *d += v),
        }
    }
}

/// True when output row oy, column ox reads input (oy + ky - pad_h, ox + kx - pad_w) on a plane
/// as wide as the output: then a whole unrolled row is one shifted copy of the input plane.
fn is_same_width(g: &Conv2dGeometry) -> bool {
    g.stride_h == 1 && g.stride_w == 1 && g.out_w() == g.in_w
}

/// For a same-width conv and kernel tap (ky, kx): the flat input offset of the tap, the run
/// `a..b` of output pixels (clamped to `p0..end`) whose input index lies in the plane and whose
/// row is inside the image, and the valid columns.
fn shifted_span(
    g: &Conv2dGeometry,
    ky: usize,
    kx: usize,
    p0: usize,
    end: usize,
) -> (isize, usize, usize, (usize, usize)) {
    let (ow, hw) = (g.out_w(), (g.in_h * g.in_w) as isize);
    let off = (ky as isize - g.pad_h as isize) * g.in_w as isize + kx as isize - g.pad_w as isize;
    let (ylo, yhi) = valid_range(ky, g.pad_h, 1, g.in_h, g.out_h());
    let a = (ylo * ow).max(p0).max((-off).max(0) as usize).min(end);
    let b = (yhi * ow).min(end).min((hw - off).max(0) as usize).max(a);
    (off, a, b, valid_range(kx, g.pad_w, 1, g.in_w, ow))
}

/// Calls `f(range)` for the positions (relative to `p0`) in `a..b` whose column is outside `valid`.
fn for_each_invalid_col(
    ow: usize,
    p0: usize,
    a: usize,
    b: usize,
    valid: (usize, usize),
    mut f: impl FnMut(Range<usize>),
) {
    if a == b || (valid.0 == 0 && valid.1 == ow) {
        return;
    }
    for oy in a / ow..=(b - 1) / ow {
        for cols in [oy * ow..oy * ow + valid.0, oy * ow + valid.1..(oy + 1) * ow] {
            let (lo, hi) = (cols.start.max(a), cols.end.min(b));
            if lo < hi {
                f(lo - p0..hi - p0);
            }
        }
    }
}

/// One unrolled row of a same-width conv: a shifted copy of the plane, then the columns that
/// wrapped in from the neighbouring row are zeroed.
fn im2col_same(g: &Conv2dGeometry, plane: &[f32], ky: usize, kx: usize, p0: usize, dst: &mut [f32]) {
    let end = p0 + dst.len();
    let (off, a, b, valid) = shifted_span(g, ky, kx, p0, end);
    dst[..a - p0].fill(0.0);
    dst[b - p0..].fill(0.0);
    if a == b {
        return;
    }
    let src = (a as isize + off) as usize;
    dst[a - p0..b - p0].copy_from_slice(&plane[src..src + (b - a)]);
    for_each_invalid_col(g.out_w(), p0, a, b, valid, |r| dst[r].fill(0.0));
}

/// The inverse of `im2col_same`: adds the row into the plane. `src` is scratch, so the wrapped
/// columns are zeroed in it first and the add is one contiguous pass.
fn col2im_same(g: &Conv2dGeometry, src: &mut [f32], ky: usize, kx: usize, p0: usize, plane: &mut [f32]) {
    let (off, a, b, valid) = shifted_span(g, ky, kx, p0, p0 + src.len());
    if a == b {
        return;
    }
    for_each_invalid_col(g.out_w(), p0, a, b, valid, |r| src[r].fill(0.0));
    let dst = (a as isize + off) as usize;
    for (d, s) in plane[dst..dst + (b - a)].iter_mut().zip(&src[a - p0..b - p0]) {
        *d += s;
    }
}

/// Marks a tap that reads padding in a [`TapTable`].
const PADDING: u32 = u32::MAX;

/// For each kernel tap, the input index (within a channel plane) that every output pixel
/// reads, or [`PADDING`]. On small feature maps (late layers at 28x28 input, where an output row
/// is 1 to 7 pixels wide) looking the index up is far cheaper than working out each row's valid
/// span as the row-wise copies do.
struct TapTable {
    plane: usize,
    index: Vec<u32>,
}

impl TapTable {
    /// Output planes at most this many pixels use the table.
    const MAX_PLANE: usize = 64;

    fn for_small_planes(g: &Conv2dGeometry) -> Option<TapTable> {
        let (oh, ow) = (g.out_h(), g.out_w());
        if oh * ow > Self::MAX_PLANE {
            return None;
        }
        let mut index = Vec::with_capacity(g.kernel_h * g.kernel_w * oh * ow);
        for ky in 0..g.kernel_h {
            for kx in 0..g.kernel_w {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let iy = (oy * g.stride_h + ky).checked_sub(g.pad_h).filter(|&y| y < g.in_h);
                        let ix = (ox * g.stride_w + kx).checked_sub(g.pad_w).filter(|&x| x < g.in_w);
                        index.push(match (iy, ix) {
                            (Some(y), Some(x)) => (y * g.in_w + x) as u32,
                            _ => PADDING,
                        });
                    }
                }
            }
        }
        Some(TapTable { plane: oh * ow, index })
    }

    /// The indices of tap `t` (= ky * kw + kx), one per output pixel.
    fn tap(&self, t: usize) -> &[u32] {
        &self.index[t * self.plane..][..self.plane]
    }
}

/// Fills `cols` (row stride `ld`) with unrolled rows `rows` of input `x` (the whole NCHW batch)
/// for the pixel segments `segs`.
pub(super) fn im2col(g: &Conv2dGeometry, x: &[f32], rows: Range<usize>, segs: &[Segment], cols: &mut [f32], ld: usize) {
    let hw = g.in_h * g.in_w;
    if let Some(taps) = TapTable::for_small_planes(g) {
        for (i, r) in rows.enumerate() {
            let (c, ky, kx) = split_row(g, r);
            let tap = taps.tap(ky * g.kernel_w + kx);
            for s in segs {
                let plane = &x[(s.n * g.in_channels + c) * hw..][..hw];
                let dst = &mut cols[i * ld + s.col..][..s.len];
                for (d, &at) in dst.iter_mut().zip(&tap[s.p0..]) {
                    *d = if at == PADDING { 0.0 } else { plane[at as usize] };
                }
            }
        }
        return;
    }
    let same = is_same_width(g);
    for (i, r) in rows.enumerate() {
        let (c, ky, kx) = split_row(g, r);
        for s in segs {
            let plane = &x[(s.n * g.in_channels + c) * hw..][..hw];
            let dst = &mut cols[i * ld + s.col..][..s.len];
            if same {
                im2col_same(g, plane, ky, kx, s.p0, dst);
                continue;
            }
            im2col_strided(g, plane, ky, kx, s.p0, dst);
        }
    }
}

/// Adds unrolled rows of input channels `channels` from `cols` (row stride `ld`, rows starting
/// at channel `channels.start`) into the image planes of segment `s`: `planes` holds those
/// channels of image `s.n` back to back. `cols` is scratch and may be modified.
pub(super) fn col2im(
    g: &Conv2dGeometry,
    cols: &mut [f32],
    ld: usize,
    channels: Range<usize>,
    s: &Segment,
    planes: &mut [f32],
) {
    let (hw, kk) = (g.in_h * g.in_w, g.kernel_h * g.kernel_w);
    if let Some(taps) = TapTable::for_small_planes(g) {
        for i in 0..channels.len() * kk {
            let (c, ky, kx) = split_row(g, i);
            let plane = &mut planes[c * hw..][..hw];
            let tap = taps.tap(ky * g.kernel_w + kx);
            for (&v, &at) in cols[i * ld + s.col..][..s.len].iter().zip(&tap[s.p0..]) {
                if at != PADDING {
                    plane[at as usize] += v;
                }
            }
        }
        return;
    }
    let same = is_same_width(g);
    for i in 0..channels.len() * kk {
        let (c, ky, kx) = split_row(g, i);
        let plane = &mut planes[c * hw..][..hw];
        let src = &mut cols[i * ld + s.col..][..s.len];
        if same {
            col2im_same(g, src, ky, kx, s.p0, plane);
            continue;
        }
        col2im_strided(g, src, ky, kx, s.p0, plane);
    }
}

/// Copies the rows `chans` of an output-shaped NCHW tensor `t` (channels `c_total`, plane size
/// `plane`) for segments `segs` into a block with row stride `ld`.
pub(super) fn gather_rows(
    t: &[f32],
    c_total: usize,
    plane: usize,
    chans: Range<usize>,
    segs: &[Segment],
    blk: &mut [f32],
    ld: usize,
) {
    for (i, c) in chans.enumerate() {
        for s in segs {
            let src = &t[(s.n * c_total + c) * plane + s.p0..][..s.len];
            blk[i * ld + s.col..][..s.len].copy_from_slice(src);
        }
    }
}
