//! Launch wrapper of kernels/gradcam.cu: the Grad-CAM map from an activation and its gradient.

use super::ctx::Ctx;
use super::exec::{Arg, DeviceStorage};
use super::pool;
use crate::error::{Error, Result};

/// cam[n, p] = relu(sum_c mean_p(grad[n, c]) * act[n, c, p]) for act, grad of [N, C, plane].
pub fn weighting(
    ctx: &Ctx,
    act: &DeviceStorage,
    grad: &DeviceStorage,
    batch: usize,
    channels: usize,
    plane: usize,
) -> Result<DeviceStorage> {
    let op = "gradcam";
    if act.len != batch * channels * plane || grad.len != act.len {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("activation {} / gradient {} for [{batch}, {channels}, {plane}]", act.len, grad.len),
        });
    }
    let weights = pool::global_forward(ctx, grad, batch * channels, plane)?;
    let cam = ctx.alloc(op, batch * plane)?;
    let args = [cam.arg(), act.arg(), weights.arg(), Arg::I32(channels as i32), Arg::I32(plane as i32)];
    ctx.launch_1d(op, "gradcam_weighted_sum_f32", batch * plane, &args)?;
    Ok(cam)
}
