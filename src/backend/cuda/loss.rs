//! Launch wrappers of kernels/loss.cu.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::reduce::{reduce, Mode};
use crate::error::{Error, Result};

/// The optional per-class weights as kernel arguments (null for "weight 1").
fn weight_args(op: &'static str, w: [Option<&DeviceStorage>; 2], classes: usize) -> Result<[Arg; 2]> {
    let arg = |s: Option<&DeviceStorage>| -> Result<Arg> {
        match s {
            None => Ok(Arg::Ptr(0)),
            Some(s) if s.len == classes => Ok(s.arg()),
            Some(s) => Err(Error::ShapeMismatch {
                op,
                detail: format!("class weights have {} elements for {classes} classes", s.len),
            }),
        }
    };
    Ok([arg(w[0])?, arg(w[1])?])
}

fn check(op: &'static str, x: &DeviceStorage, t: &DeviceStorage, rows: usize, classes: usize) -> Result<()> {
    if x.len != rows * classes || t.len != x.len {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("logits {} / targets {} for {rows} x {classes}", x.len, t.len),
        });
    }
    if x.len == 0 {
        return Err(Error::EmptyTensor { op, shape: vec![rows, classes] });
    }
    Ok(())
}

/// Mean weighted BCE-with-logits (per-element losses, then the f64 reduction).
pub fn forward(
    ctx: &Ctx,
    x: &DeviceStorage,
    t: &DeviceStorage,
    w: [Option<&DeviceStorage>; 2],
    rows: usize,
    classes: usize,
) -> Result<f32> {
    let op = "bce_with_logits";
    check(op, x, t, rows, classes)?;
    let [pos, cls] = weight_args(op, w, classes)?;
    let losses = ctx.alloc(op, x.len)?;
    ctx.launch_1d(op, "bce_forward_f32", x.len, &[losses.arg(), x.arg(), t.arg(), pos, cls, Arg::I32(classes as i32)])?;
    Ok((reduce(ctx, op, &losses, Mode::Sum)? / x.len as f64) as f32)
}

/// d(mean loss)/d(logits) * scale.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: &Ctx,
    x: &DeviceStorage,
    t: &DeviceStorage,
    w: [Option<&DeviceStorage>; 2],
    rows: usize,
    classes: usize,
    scale: f32,
) -> Result<DeviceStorage> {
    let op = "bce_with_logits_backward";
    check(op, x, t, rows, classes)?;
    let [pos, cls] = weight_args(op, w, classes)?;
    let dx = ctx.alloc(op, x.len)?;
    let k = scale / x.len as f32;
    ctx.launch_1d(
        op,
        "bce_backward_f32",
        x.len,
        &[dx.arg(), x.arg(), t.arg(), pos, cls, Arg::I32(classes as i32), Arg::F32(k)],
    )?;
    Ok(dx)
}
