//! Launch wrappers of kernels/reduce.cu.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::launch;
use crate::error::Result;

/// What a whole-tensor reduction sums (`CXR_REDUCE_*` in reduce.cu).
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum Mode {
    Sum = 0,
    SumSquares = 1,
    NonFinite = 2,
}

/// The f64 reduction of every element: per-block partials, then one block over them.
pub fn reduce(ctx: &Ctx, op: &'static str, x: &DeviceStorage, mode: Mode) -> Result<f64> {
    if x.len == 0 {
        return Ok(0.0);
    }
    let (cfg, count) = launch::reduce_partials(op, x.len)?;
    let partials = ctx.scratch(op, count * 8)?;
    ctx.launch("reduce_partial_f64", cfg, &[partials.arg(), x.arg(), Arg::I32(x.len as i32), Arg::I32(mode as i32)])?;
    let out = ctx.scratch(op, 8)?;
    ctx.launch("reduce_final_f64", launch::reduce_final(), &[out.arg(), partials.arg(), Arg::I32(count as i32)])?;
    ctx.download_f64(&out)
}

/// y[c] = sum of x[n, c, p] over n and p.
pub fn channel_sum(
    ctx: &Ctx,
    op: &'static str,
    x: &DeviceStorage,
    batch: usize,
    channels: usize,
    plane: usize,
) -> Result<DeviceStorage> {
    let y = ctx.alloc(op, channels)?;
    if channels == 0 {
        return Ok(y);
    }
    let cfg = launch::per_channel(op, channels, batch * plane)?;
    let sizes = [batch, channels, plane].map(|v| Arg::I32(v as i32));
    ctx.launch("channel_sum_f32", cfg, &[&[y.arg(), x.arg()][..], &sizes].concat())?;
    Ok(y)
}
