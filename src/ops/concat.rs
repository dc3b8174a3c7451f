//! Concatenation along the channel axis (dimension 1) of [N, C_i, ...] tensors.

use super::same_device;
use crate::autograd::GradFn;
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

struct CatBackward {
    parts: Vec<Tensor>,
    plane: usize,
}

impl GradFn for CatBackward {
    fn name(&self) -> &'static str {
        "cat_channels"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        self.parts.iter().collect()
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let channels: Vec<usize> = self.parts.iter().map(|p| p.dims()[1]).collect();
        let batch = self.parts[0].dims()[0];
        let pieces = self.parts[0].backend()?.split_channels(grad, &channels, batch, self.plane)?;
        Ok(pieces.into_iter().zip(&self.parts).map(|(g, p)| p.requires_grad().then_some(g)).collect())
    }
}

/// Checks that `parts` can be concatenated along dimension 1; returns the concatenation's shape
/// and the elements per channel of one image (the plane).
pub(crate) fn cat_shape(parts: &[&Tensor]) -> Result<(Vec<usize>, usize)> {
    let first = parts.first().ok_or(Error::InvalidArgument { op: "cat_channels", detail: "no tensors".into() })?;
    same_device("cat_channels", parts)?;
    let d0 = first.dims();
    if d0.len() < 2 {
        return Err(Error::ShapeMismatch { op: "cat_channels", detail: format!("need [N, C, ...], got {d0:?}") });
    }
    for p in parts {
        let d = p.dims();
        if d.len() != d0.len() || d[0] != d0[0] || d[2..] != d0[2..] {
            return Err(Error::ShapeMismatch {
                op: "cat_channels",
                detail: format!("{d:?} does not match {d0:?} outside dimension 1"),
            });
        }
    }
    let mut shape = d0.to_vec();
    shape[1] = parts.iter().map(|p| p.dims()[1]).sum();
    Ok((shape, d0[2..].iter().product()))
}

/// Concatenates tensors that agree in every dimension but the channel one (dimension 1).
pub fn cat_channels(parts: &[&Tensor]) -> Result<Tensor> {
    let (shape, plane) = cat_shape(parts)?;
    let (first, d0) = (parts[0], parts[0].dims());
    let storages: Vec<_> = parts.iter().map(|p| p.storage()).collect();
    let pairs: Vec<(&Storage, usize)> = storages.iter().zip(parts).map(|(s, p)| (&**s, p.dims()[1])).collect();
    let out = first.backend()?.concat_channels(&pairs, d0[0], plane)?;
    drop(pairs);
    drop(storages);
    let owned: Vec<Tensor> = parts.iter().map(|&p| p.clone()).collect();
    Ok(Tensor::from_op(out, shape, || Box::new(CatBackward { parts: owned, plane }), parts))
}
