//! 2-D convolution (NCHW, dilation 1, one group) with optional bias.

use super::{expect_rank, same_device};
use crate::autograd::GradFn;
use crate::backend::{Conv2dGeometry, Storage};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

struct Conv2dBackward {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
    g: Conv2dGeometry,
}

impl GradFn for Conv2dBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.w];
        v.extend(self.b.as_ref());
        v
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let be = self.x.backend()?;
        let g = &self.g;
        let dx = self.x.requires_grad().then(|| be.conv2d_backward_input(g, grad, &self.w.storage())).transpose()?;
        let dw = self.w.requires_grad().then(|| be.conv2d_backward_weight(g, &self.x.storage(), grad)).transpose()?;
        let mut grads = vec![dx, dw];
        if let Some(b) = &self.b {
            let plane = g.out_h() * g.out_w();
            grads.push(b.requires_grad().then(|| be.channel_sum(grad, g.batch, g.out_channels, plane)).transpose()?);
        }
        Ok(grads)
    }
}

/// Checks shapes and builds the geometry of conv2d(x [N,C,H,W], w [O,C,kh,kw]).
pub fn conv2d_geometry(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Conv2dGeometry> {
    expect_rank("conv2d", "input", x, 4)?;
    expect_rank("conv2d", "weight", w, 4)?;
    let (xd, wd) = (x.dims(), w.dims());
    if xd[1] != wd[1] {
        return Err(Error::ShapeMismatch {
            op: "conv2d",
            detail: format!("input {xd:?} has {} channels, weight {wd:?} expects {}", xd[1], wd[1]),
        });
    }
    let g = Conv2dGeometry {
        batch: xd[0],
        in_channels: xd[1],
        out_channels: wd[0],
        in_h: xd[2],
        in_w: xd[3],
        kernel_h: wd[2],
        kernel_w: wd[3],
        stride_h: stride,
        stride_w: stride,
        pad_h: padding,
        pad_w: padding,
    };
    if !g.is_valid() || x.numel() == 0 || w.numel() == 0 {
        return Err(Error::InvalidArgument {
            op: "conv2d",
            detail: format!("input {xd:?}, weight {wd:?}, stride {stride}, padding {padding} give no output"),
        });
    }
    Ok(g)
}

/// y = conv2d(x, w, stride, padding) + b.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let mut all = vec![x, w];
    all.extend(b);
    same_device("conv2d", &all)?;
    let g = conv2d_geometry(x, w, stride, padding)?;
    if let Some(b) = b {
        if b.dims() != [g.out_channels] {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                detail: format!("bias {:?}, expected [{}]", b.dims(), g.out_channels),
            });
        }
    }
    let bias_storage = b.map(|b| b.storage());
    let out = x.backend()?.conv2d_forward(&g, &x.storage(), &w.storage(), bias_storage.as_deref())?;
    drop(bias_storage);
    let shape = [g.batch, g.out_channels, g.out_h(), g.out_w()];
    let record = || -> Box<dyn GradFn> { Box::new(Conv2dBackward { x: x.clone(), w: w.clone(), b: b.cloned(), g }) };
    Ok(Tensor::from_op(out, shape, record, &all))
}
