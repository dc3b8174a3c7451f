//! Max pool, average pool and global average pool over NCHW tensors.

use super::expect_rank;
use crate::autograd::GradFn;
use crate::backend::{Pool2dGeometry, Storage};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn pool_geometry(op: &'static str, x: &Tensor, kernel: usize, stride: usize, pad: usize) -> Result<Pool2dGeometry> {
    expect_rank(op, "input", x, 4)?;
    let d = x.dims();
    if x.numel() == 0 {
        return Err(Error::EmptyTensor { op, shape: d.to_vec() });
    }
    let g = Pool2dGeometry { batch: d[0], channels: d[1], in_h: d[2], in_w: d[3], kernel, stride, pad };
    if !g.is_valid() {
        return Err(Error::InvalidArgument {
            op,
            detail: format!("input {d:?}, kernel {kernel}, stride {stride}, padding {pad} give no output (padding must be at most half the kernel)"),
        });
    }
    Ok(g)
}

struct MaxPoolBackward {
    x: Tensor,
    g: Pool2dGeometry,
}

impl GradFn for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        Ok(vec![Some(self.x.backend()?.max_pool2d_backward(&self.g, &self.x.storage(), grad)?)])
    }
}

/// Max pool with a square window (padding acts as -inf, floor mode).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let g = pool_geometry("max_pool2d", x, kernel, stride, pad)?;
    let out = x.backend()?.max_pool2d_forward(&g, &x.storage())?;
    let shape = [g.batch, g.channels, g.out_h(), g.out_w()];
    Ok(Tensor::from_op(out, shape, || Box::new(MaxPoolBackward { x: x.clone(), g }), &[x]))
}

struct AvgPoolBackward {
    x: Tensor,
    g: Pool2dGeometry,
}

impl GradFn for AvgPoolBackward {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        Ok(vec![Some(self.x.backend()?.avg_pool2d_backward(&self.g, grad)?)])
    }
}

/// Average pool with a square window (padding counted in the divisor, floor mode).
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let g = pool_geometry("avg_pool2d", x, kernel, stride, pad)?;
    let out = x.backend()?.avg_pool2d_forward(&g, &x.storage())?;
    let shape = [g.batch, g.channels, g.out_h(), g.out_w()];
    Ok(Tensor::from_op(out, shape, || Box::new(AvgPoolBackward { x: x.clone(), g }), &[x]))
}

struct GlobalAvgPoolBackward {
    x: Tensor,
}

impl GradFn for GlobalAvgPoolBackward {
    fn name(&self) -> &'static str {
        "global_avg_pool"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let d = self.x.dims();
        Ok(vec![Some(self.x.backend()?.global_avg_pool_backward(grad, d[0] * d[1], d[2] * d[3])?)])
    }
}

/// [N, C, H, W] -> [N, C]: the mean of each channel's plane.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    expect_rank("global_avg_pool", "input", x, 4)?;
    let d = x.dims();
    if x.numel() == 0 {
        return Err(Error::EmptyTensor { op: "global_avg_pool", shape: d.to_vec() });
    }
    let out = x.backend()?.global_avg_pool_forward(&x.storage(), d[0] * d[1], d[2] * d[3])?;
    Ok(Tensor::from_op(out, [d[0], d[1]], || Box::new(GlobalAvgPoolBackward { x: x.clone() }), &[x]))
}
