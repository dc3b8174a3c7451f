//! Launch wrappers of kernels/pool.cu.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::launch;
use crate::backend::Pool2dGeometry;
use crate::error::{Error, Result};

/// Checks the geometry and returns the kernel's `CxrPool` struct.
fn geometry_arg(op: &'static str, g: &Pool2dGeometry) -> Result<Arg> {
    if !g.is_valid() {
        return Err(Error::InvalidArgument { op, detail: format!("invalid pooling geometry {g:?}") });
    }
    launch::check_product(op, "input", &[g.batch, g.channels, g.in_h, g.in_w])?;
    let fields = [g.channels, g.in_h, g.in_w, g.out_h(), g.out_w(), g.kernel, g.stride, g.pad];
    Ok(Arg::Ints(fields.iter().map(|&v| v as i32).collect()))
}

fn check_len(op: &'static str, s: &DeviceStorage, len: usize) -> Result<()> {
    if s.len != len {
        return Err(Error::ShapeMismatch { op, detail: format!("{} elements, the geometry needs {len}", s.len) });
    }
    Ok(())
}

/// Max or average pool forward (`kernel` picks which).
pub fn forward(
    ctx: &Ctx,
    op: &'static str,
    kernel: &'static str,
    g: &Pool2dGeometry,
    x: &DeviceStorage,
) -> Result<DeviceStorage> {
    let geo = geometry_arg(op, g)?;
    check_len(op, x, g.input_len())?;
    let y = ctx.alloc(op, g.output_len())?;
    ctx.launch_1d(op, kernel, y.len, &[y.arg(), x.arg(), geo])?;
    Ok(y)
}

/// Max pool backward: dy to the first maximum of each window (recomputed from x).
pub fn max_backward(ctx: &Ctx, g: &Pool2dGeometry, x: &DeviceStorage, dy: &DeviceStorage) -> Result<DeviceStorage> {
    let op = "max_pool2d_backward";
    let geo = geometry_arg(op, g)?;
    check_len(op, x, g.input_len())?;
    check_len(op, dy, g.output_len())?;
    let dx = ctx.alloc(op, g.input_len())?;
    ctx.launch_1d(op, "max_pool_backward_f32", dx.len, &[dx.arg(), x.arg(), dy.arg(), geo])?;
    Ok(dx)
}

/// Average pool backward.
pub fn avg_backward(ctx: &Ctx, g: &Pool2dGeometry, dy: &DeviceStorage) -> Result<DeviceStorage> {
    let op = "avg_pool2d_backward";
    let geo = geometry_arg(op, g)?;
    check_len(op, dy, g.output_len())?;
    let dx = ctx.alloc(op, g.input_len())?;
    ctx.launch_1d(op, "avg_pool_backward_f32", dx.len, &[dx.arg(), dy.arg(), geo])?;
    Ok(dx)
}

/// [rows, plane] -> [rows] means.
pub fn global_forward(ctx: &Ctx, x: &DeviceStorage, rows: usize, plane: usize) -> Result<DeviceStorage> {
    let op = "global_avg_pool";
    launch::check_product(op, "input", &[rows, plane])?;
    if plane == 0 {
        return Err(Error::EmptyTensor { op, shape: vec![rows, plane] });
    }
    check_len(op, x, rows * plane)?;
    let y = ctx.alloc(op, rows)?;
    ctx.launch_1d(op, "global_avg_pool_forward_f32", rows, &[y.arg(), x.arg(), Arg::I32(plane as i32)])?;
    Ok(y)
}

/// [rows] -> [rows, plane], each value spread as dy / plane.
pub fn global_backward(ctx: &Ctx, dy: &DeviceStorage, rows: usize, plane: usize) -> Result<DeviceStorage> {
    let op = "global_avg_pool_backward";
    launch::check_product(op, "input", &[rows, plane])?;
    check_len(op, dy, rows)?;
    let dx = ctx.alloc(op, rows * plane)?;
    ctx.launch_1d(op, "global_avg_pool_backward_f32", dx.len, &[dx.arg(), dy.arg(), Arg::I32(plane as i32)])?;
    Ok(dx)
}
