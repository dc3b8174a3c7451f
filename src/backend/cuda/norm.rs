//! Launch wrappers of kernels/norm.cu.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::launch;
use crate::backend::NormShape;
use crate::error::{Error, Result};

fn check(op: &'static str, s: NormShape, x: &DeviceStorage, per_channel: &[&DeviceStorage]) -> Result<()> {
    launch::check_product(op, "input [N, C, plane]", &[s.batch, s.channels, s.plane])?;
    if x.len != s.len() || per_channel.iter().any(|p| p.len != s.channels) {
        return Err(Error::ShapeMismatch { op, detail: format!("storage sizes do not fit {s:?}") });
    }
    if s.per_channel() == 0 {
        return Err(Error::EmptyTensor { op, shape: vec![s.batch, s.channels, s.plane] });
    }
    Ok(())
}

fn sizes(s: NormShape) -> [Arg; 3] {
    [s.batch, s.channels, s.plane].map(|v| Arg::I32(v as i32))
}

/// y = (x - mean) * inv_std * gamma + beta.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    ctx: &Ctx,
    op: &'static str,
    s: NormShape,
    x: &DeviceStorage,
    mean: &DeviceStorage,
    inv_std: &DeviceStorage,
    gamma: &DeviceStorage,
    beta: &DeviceStorage,
) -> Result<DeviceStorage> {
    check(op, s, x, &[mean, inv_std, gamma, beta])?;
    let y = ctx.alloc(op, x.len)?;
    let args = [
        y.arg(),
        x.arg(),
        mean.arg(),
        inv_std.arg(),
        gamma.arg(),
        beta.arg(),
        Arg::I32(s.channels as i32),
        Arg::I32(s.plane as i32),
    ];
    ctx.launch_1d(op, "batch_norm_apply_f32", x.len, &args)?;
    Ok(y)
}

/// Batch statistics (and the running-stat update, in place): returns (mean, inv_std).
#[allow(clippy::too_many_arguments)]
pub fn train_stats(
    ctx: &Ctx,
    s: NormShape,
    x: &DeviceStorage,
    running_mean: &DeviceStorage,
    running_var: &DeviceStorage,
    momentum: f32,
    eps: f32,
) -> Result<(DeviceStorage, DeviceStorage)> {
    let op = "batch_norm";
    check(op, s, x, &[running_mean, running_var])?;
    let mean = ctx.alloc(op, s.channels)?;
    let inv_std = ctx.alloc(op, s.channels)?;
    let cfg = launch::per_channel(op, s.channels, s.per_channel())?;
    let ptrs = [mean.arg(), inv_std.arg(), running_mean.arg(), running_var.arg(), x.arg()];
    let args = [&ptrs[..], &sizes(s), &[Arg::F32(momentum), Arg::F32(eps)]].concat();
    ctx.launch("batch_norm_stats_f32", cfg, &args)?;
    Ok((mean, inv_std))
}

/// (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: &Ctx,
    s: NormShape,
    x: &DeviceStorage,
    dy: &DeviceStorage,
    gamma: &DeviceStorage,
    mean: &DeviceStorage,
    inv_std: &DeviceStorage,
    batch_stats: bool,
) -> Result<(DeviceStorage, DeviceStorage, DeviceStorage)> {
    let op = "batch_norm_backward";
    check(op, s, x, &[gamma, mean, inv_std])?;
    check(op, s, dy, &[])?;
    let dgamma = ctx.alloc(op, s.channels)?;
    let dbeta = ctx.alloc(op, s.channels)?;
    // The centring terms the input gradient uses (see the kernel).
    let offset = ctx.alloc(op, s.channels)?;
    let mean_dyx = ctx.alloc(op, s.channels)?;
    let cfg = launch::per_channel(op, s.channels, s.per_channel())?;
    let ptrs = [dgamma.arg(), dbeta.arg(), offset.arg(), mean_dyx.arg(), x.arg(), dy.arg(), mean.arg(), inv_std.arg()];
    ctx.launch("batch_norm_backward_reduce_f32", cfg, &[&ptrs[..], &sizes(s)].concat())?;
    let dx = ctx.alloc(op, x.len)?;
    let ptrs = [
        dx.arg(),
        x.arg(),
        dy.arg(),
        gamma.arg(),
        mean.arg(),
        inv_std.arg(),
        offset.arg(),
        mean_dyx.arg(),
        dbeta.arg(),
    ];
    let rest = [s.channels, s.plane, s.per_channel(), batch_stats as usize].map(|v| Arg::I32(v as i32));
    ctx.launch_1d(op, "batch_norm_backward_input_f32", x.len, &[&ptrs[..], &rest].concat())?;
    Ok((dx, dgamma, dbeta))
}
