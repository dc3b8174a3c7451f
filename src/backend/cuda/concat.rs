//! Launch wrappers of kernels/concat.cu.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::launch;
use crate::error::{Error, Result};

/// Copies `count` channels of every image from src (at channel `src_off` of `src_channels`) to
/// dst (at `dst_off` of `dst_channels`).
#[allow(clippy::too_many_arguments)]
fn copy_block(
    ctx: &Ctx,
    op: &'static str,
    dst: &DeviceStorage,
    src: &DeviceStorage,
    batch: usize,
    plane: usize,
    count: usize,
    src_at: (usize, usize),
    dst_at: (usize, usize),
) -> Result<()> {
    let sizes = [plane, count, src_at.0, src_at.1, dst_at.0, dst_at.1].map(|v| Arg::I32(v as i32));
    ctx.launch_1d(op, "copy_channels_f32", batch * count * plane, &[&[dst.arg(), src.arg()][..], &sizes].concat())
}

/// Concatenates [N, C_i, plane] parts along channels.
pub fn concat(ctx: &Ctx, parts: &[(&DeviceStorage, usize)], batch: usize, plane: usize) -> Result<DeviceStorage> {
    let op = "concat_channels";
    let total: usize = parts.iter().map(|p| p.1).sum();
    launch::check_product(op, "output", &[batch, total, plane])?;
    if let Some((s, c)) = parts.iter().find(|(s, c)| s.len != batch * c * plane) {
        return Err(Error::ShapeMismatch { op, detail: format!("part of {c} channels has {} elements", s.len) });
    }
    let y = ctx.alloc(op, batch * total * plane)?;
    let mut offset = 0;
    for (part, c) in parts {
        copy_block(ctx, op, &y, part, batch, plane, *c, (*c, 0), (total, offset))?;
        offset += c;
    }
    Ok(y)
}

/// Splits [N, sum C_i, plane] into its channel blocks.
pub fn split(
    ctx: &Ctx,
    x: &DeviceStorage,
    channels: &[usize],
    batch: usize,
    plane: usize,
) -> Result<Vec<DeviceStorage>> {
    let op = "split_channels";
    let total: usize = channels.iter().sum();
    launch::check_product(op, "input", &[batch, total, plane])?;
    if x.len != batch * total * plane {
        return Err(Error::ShapeMismatch { op, detail: format!("{} elements for {batch} x {total} x {plane}", x.len) });
    }
    let mut offset = 0;
    let mut out = Vec::with_capacity(channels.len());
    for &c in channels {
        let part = ctx.alloc(op, batch * c * plane)?;
        copy_block(ctx, op, &part, x, batch, plane, c, (total, offset), (c, 0))?;
        offset += c;
        out.push(part);
    }
    Ok(out)
}
