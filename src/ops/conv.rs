//! 2-D convolution (NCHW, dilation 1, one group) with optional bias.

use super::BatchNormState;
use super::{expect_rank, same_device};
use crate::autograd;
use crate::autograd::GradFn;
use crate::backend::{Conv2dGeometry, Storage};
use crate::backend::{ConvEpilogue, EvalNorm};
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
    let out = run_fused(&g, x, w, b, ConvTail::default())?;
    let shape = [g.batch, g.out_channels, g.out_h(), g.out_w()];
    let record = || -> Box<dyn GradFn> { Box::new(Conv2dBackward { x: x.clone(), w: w.clone(), b: b.cloned(), g }) };
    Ok(Tensor::from_op(out, shape, record, &all))
}

/// What a fused convolution applies after `conv2d(x, w) + b`, in order.
#[derive(Clone, Copy, Default)]
pub struct ConvTail<'a> {
    /// An eval-mode batch norm over the output channels (running statistics).
    pub norm: Option<NormParams<'a>>,
    /// Added after the norm (a residual connection); the output's shape.
    pub residual: Option<&'a Tensor>,
    /// ReLU last.
    pub relu: bool,
}

/// A batch norm's affine parameters and running statistics.
#[derive(Clone, Copy)]
pub struct NormParams<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub state: &'a BatchNormState,
}

/// relu?(norm?(conv2d(x, w, stride, padding) + b) + residual): a convolution with what follows
/// it in ResNet and DenseNet (an eval-mode batch norm, a residual add, the activation). When no
/// gradient is recorded (inference) it runs as one kernel whose store applies them all, with
/// the layer's packed weights cached; otherwise it is the separate differentiable ops. Both give
/// the same bits.
pub fn conv2d_fused(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    tail: ConvTail<'_>,
) -> Result<Tensor> {
    let mut all = vec![x, w];
    all.extend(b);
    all.extend(tail.residual);
    if let Some(n) = &tail.norm {
        all.extend([n.gamma, n.beta]);
    }
    let records = autograd::is_grad_enabled() && all.iter().any(|t| t.requires_grad());
    if records {
        return conv2d_then_separately(x, w, b, stride, padding, tail);
    }
    if let Some(n) = &tail.norm {
        all.extend([&n.state.running_mean, &n.state.running_var]);
    }
    same_device("conv2d", &all)?;
    let g = conv2d_geometry(x, w, stride, padding)?;
    let shape = [g.batch, g.out_channels, g.out_h(), g.out_w()];
    let per_channel = |what: &str, t: &Tensor| -> Result<()> {
        if t.dims() != [g.out_channels] {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                detail: format!("{what} {:?}, expected [{}]", t.dims(), g.out_channels),
            });
        }
        Ok(())
    };
    if let Some(b) = b {
        per_channel("bias", b)?;
    }
    if let Some(n) = &tail.norm {
        per_channel("norm weight", n.gamma)?;
        per_channel("norm bias", n.beta)?;
        per_channel("running_mean", &n.state.running_mean)?;
        per_channel("running_var", &n.state.running_var)?;
    }
    if let Some(r) = tail.residual {
        if r.dims() != shape {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                detail: format!("residual {:?}, output {shape:?}", r.dims()),
            });
        }
    }
    let out = run_fused(&g, x, w, b, tail)?;
    Tensor::from_storage(out, shape)
}

/// The unfused chain, recording a graph.
fn conv2d_then_separately(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    tail: ConvTail<'_>,
) -> Result<Tensor> {
    let mut y = conv2d(x, w, b, stride, padding)?;
    if let Some(n) = tail.norm {
        y = super::batch_norm(&y, n.gamma, n.beta, n.state, false)?;
    }
    if let Some(r) = tail.residual {
        y = super::add(&y, r)?;
    }
    if tail.relu {
        y = super::relu(&y)?;
    }
    Ok(y)
}

/// The backend's fused forward, with `w`'s prepared-form slot read under its storage lock.
fn run_fused(g: &Conv2dGeometry, x: &Tensor, w: &Tensor, b: Option<&Tensor>, tail: ConvTail<'_>) -> Result<Storage> {
    let (x_data, w_data) = (x.storage(), w.storage());
    let bias = b.map(|b| b.storage());
    let res = tail.residual.map(|r| r.storage());
    let norm_guards = tail.norm.map(|n| {
        (
            n.gamma.storage(),
            n.beta.storage(),
            n.state.running_mean.storage(),
            n.state.running_var.storage(),
            n.state.eps,
        )
    });
    let norm = norm_guards.as_ref().map(|(gamma, beta, mean, var, eps)| EvalNorm {
        gamma,
        beta,
        running_mean: mean,
        running_var: var,
        eps: *eps,
    });
    let finish = ConvEpilogue { bias: bias.as_deref(), norm, residual: res.as_deref(), relu: tail.relu };
    x.backend()?.conv2d_forward_fused(g, &x_data, &w_data, w.prepared(), finish)
}
