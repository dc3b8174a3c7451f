//! Launch wrappers of kernels/optim.cu.

use super::ctx::Ctx;
use super::elementwise::same_len;
use super::exec::{Arg, DeviceStorage};
use crate::backend::{AdamStep, SgdStep};
use crate::error::Result;

/// One SGD step in place; `buf` is the momentum buffer, `first` when it was just created.
pub fn sgd(
    ctx: &Ctx,
    p: &DeviceStorage,
    g: &DeviceStorage,
    buf: Option<(&DeviceStorage, bool)>,
    h: &SgdStep,
) -> Result<()> {
    let op = "sgd_step";
    same_len(op, p, g)?;
    let (buf_arg, first) = match buf {
        Some((b, first)) => {
            same_len(op, p, b)?;
            (b.arg(), first)
        }
        None => (Arg::Ptr(0), false),
    };
    let hyper = [Arg::F32(h.lr), Arg::F32(h.momentum), Arg::F32(h.dampening), Arg::F32(h.weight_decay)];
    let flags = [Arg::I32(h.nesterov as i32), Arg::I32(first as i32)];
    ctx.launch_1d(op, "sgd_step_f32", p.len, &[&[p.arg(), g.arg(), buf_arg][..], &hyper, &flags].concat())
}

/// One Adam/AdamW step in place; the bias corrections are computed here in f64, as the CPU does.
pub fn adam(
    ctx: &Ctx,
    p: &DeviceStorage,
    g: &DeviceStorage,
    m: &DeviceStorage,
    v: &DeviceStorage,
    h: &AdamStep,
) -> Result<()> {
    let op = "adam_step";
    for other in [g, m, v] {
        same_len(op, p, other)?;
    }
    let t = h.step as i32;
    let bias1 = 1.0 - (h.beta1 as f64).powi(t);
    let step_size = (h.lr as f64 / bias1) as f32;
    let bias2_sqrt = (1.0 - (h.beta2 as f64).powi(t)).sqrt() as f32;
    let decay = 1.0 - h.lr * h.weight_decay;
    let hyper =
        [Arg::F32(h.beta1), Arg::F32(h.beta2), Arg::F32(h.eps), Arg::F32(h.weight_decay), Arg::I32(h.decoupled as i32)];
    let derived = [Arg::F32(step_size), Arg::F32(bias2_sqrt), Arg::F32(decay)];
    ctx.launch_1d(op, "adam_step_f32", p.len, &[&[p.arg(), g.arg(), m.arg(), v.arg()][..], &hyper, &derived].concat())
}
