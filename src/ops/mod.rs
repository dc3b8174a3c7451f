//! Differentiable ops: each file holds one op family's forward (shape checks, a backend call, the
//! record of what backward needs) and its [`GradFn`](crate::autograd::GradFn). The CPU kernels are
//! in `backend/cpu/<same name>.rs`, the CUDA kernels in `kernels/<same name>.cu`.

pub mod activation;
pub mod concat;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod shape;

pub use activation::{relu, sigmoid};
pub use concat::cat_channels;
pub use conv::{conv2d, conv2d_fused, ConvTail, NormParams};
pub use dropout::dropout;
pub use elementwise::{add, mul, scale};
pub use loss::{bce_with_logits, bce_with_logits_weighted};
pub use matmul::{linear, matmul};
pub use norm::{batch_norm, batch_norm_add_relu, batch_norm_relu, cat_batch_norm_relu, BatchNormState};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Errors unless every tensor is on the first one's device.
pub(crate) fn same_device(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    let first = tensors[0].device();
    match tensors.iter().find(|t| t.device() != first) {
        Some(t) => Err(Error::DeviceMismatch { op, a: first.to_string(), b: t.device().to_string() }),
        None => Ok(()),
    }
}

/// Errors unless `t` has exactly `rank` dimensions.
pub(crate) fn expect_rank(op: &'static str, what: &str, t: &Tensor, rank: usize) -> Result<()> {
    if t.shape().rank() != rank {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("{what} must have {rank} dimensions, got shape {:?}", t.dims()),
        });
    }
    Ok(())
}

/// Errors when `t` has no elements.
pub(crate) fn expect_nonempty(op: &'static str, t: &Tensor) -> Result<()> {
    if t.numel() == 0 {
        return Err(Error::EmptyTensor { op, shape: t.dims().to_vec() });
    }
    Ok(())
}

/// Errors unless two tensors have the same shape.
pub(crate) fn expect_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::ShapeMismatch { op, detail: format!("{:?} vs {:?}", a.dims(), b.dims()) });
    }
    Ok(())
}
