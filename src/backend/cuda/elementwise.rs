//! Launch wrappers of kernels/elementwise.cu.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use crate::error::{Error, Result};

/// y = kernel(x) for the one-input kernels (relu, sigmoid).
pub fn unary(ctx: &Ctx, op: &'static str, kernel: &'static str, x: &DeviceStorage) -> Result<DeviceStorage> {
    let y = ctx.alloc(op, x.len)?;
    ctx.launch_1d(op, kernel, x.len, &[y.arg(), x.arg()])?;
    Ok(y)
}

/// y = kernel(a, b) for the two-input kernels (add, mul, the activation backwards).
pub fn binary(
    ctx: &Ctx,
    op: &'static str,
    kernel: &'static str,
    a: &DeviceStorage,
    b: &DeviceStorage,
) -> Result<DeviceStorage> {
    same_len(op, a, b)?;
    let y = ctx.alloc(op, a.len)?;
    ctx.launch_1d(op, kernel, a.len, &[y.arg(), a.arg(), b.arg()])?;
    Ok(y)
}

/// Errors unless both operands have the same element count.
pub fn same_len(op: &'static str, a: &DeviceStorage, b: &DeviceStorage) -> Result<()> {
    if a.len != b.len {
        return Err(Error::ShapeMismatch { op, detail: format!("{} vs {} elements", a.len, b.len) });
    }
    Ok(())
}

/// dst += src.
pub fn add_assign(ctx: &Ctx, dst: &DeviceStorage, src: &DeviceStorage) -> Result<()> {
    same_len("add_assign", dst, src)?;
    ctx.launch_1d("add_assign", "add_assign_f32", dst.len, &[dst.arg(), src.arg()])
}

/// x * s.
pub fn scale(ctx: &Ctx, x: &DeviceStorage, s: f32) -> Result<DeviceStorage> {
    let y = ctx.alloc("scale", x.len)?;
    ctx.launch_1d("scale", "scale_f32", x.len, &[y.arg(), x.arg(), Arg::F32(s)])?;
    Ok(y)
}

/// The Philox inverted-dropout mask (same bits as src/backend/philox.rs).
pub fn dropout_mask(ctx: &Ctx, len: usize, p: f32, seed: u64) -> Result<DeviceStorage> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::InvalidArgument { op: "dropout", detail: format!("p = {p} is not in [0, 1]") });
    }
    let y = ctx.alloc("dropout", len)?;
    let args = [y.arg(), Arg::F32(p), Arg::U32(seed as u32), Arg::U32((seed >> 32) as u32)];
    ctx.launch_1d("dropout", "dropout_mask_f32", len, &args)?;
    Ok(y)
}

/// x[r, c] += bias[c].
pub fn add_row_bias(ctx: &Ctx, x: &DeviceStorage, bias: &DeviceStorage, rows: usize, cols: usize) -> Result<()> {
    let op = "add_row_bias";
    if x.len != rows * cols || bias.len != cols {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("x {} / bias {} for {rows} x {cols}", x.len, bias.len),
        });
    }
    ctx.launch_1d(op, "add_row_bias_f32", x.len, &[x.arg(), bias.arg(), Arg::I32(cols as i32)])
}

/// y[n, c, p] += bias[c].
pub fn add_channel_bias(
    ctx: &Ctx,
    y: &DeviceStorage,
    bias: &DeviceStorage,
    channels: usize,
    plane: usize,
) -> Result<()> {
    ctx.launch_1d(
        "conv2d",
        "add_channel_bias_f32",
        y.len,
        &[y.arg(), bias.arg(), Arg::I32(channels as i32), Arg::I32(plane as i32)],
    )
}

/// 1/sqrt(var + eps).
pub fn inv_std(ctx: &Ctx, var: &DeviceStorage, eps: f32) -> Result<DeviceStorage> {
    let y = ctx.alloc("inv_std", var.len)?;
    ctx.launch_1d("inv_std", "inv_std_f32", var.len, &[y.arg(), var.arg(), Arg::F32(eps)])?;
    Ok(y)
}
