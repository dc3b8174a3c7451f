//! Elementwise arithmetic: add (residual connections), mul, scale.

use super::{expect_same_shape, same_device};
use crate::autograd::GradFn;
use crate::backend::Storage;
use crate::error::Result;
use crate::tensor::Tensor;

struct AddBackward {
    a: Tensor,
    b: Tensor,
}

impl GradFn for AddBackward {
    fn name(&self) -> &'static str {
        "add"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        // Copy the gradient only for inputs that take one (a residual's frozen side does not).
        Ok(vec![self.a.requires_grad().then(|| grad.clone()), self.b.requires_grad().then(|| grad.clone())])
    }
}

/// a + b, same shapes.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_device("add", &[a, b])?;
    expect_same_shape("add", a, b)?;
    let out = a.backend()?.add(&a.storage(), &b.storage())?;
    Ok(Tensor::from_op(out, a.shape(), || Box::new(AddBackward { a: a.clone(), b: b.clone() }), &[a, b]))
}

struct MulBackward {
    a: Tensor,
    b: Tensor,
}

impl GradFn for MulBackward {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let be = self.a.backend()?;
        let da = self.a.requires_grad().then(|| be.mul(grad, &self.b.storage())).transpose()?;
        let db = self.b.requires_grad().then(|| be.mul(grad, &self.a.storage())).transpose()?;
        Ok(vec![da, db])
    }
}

/// a * b elementwise, same shapes.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_device("mul", &[a, b])?;
    expect_same_shape("mul", a, b)?;
    let out = a.backend()?.mul(&a.storage(), &b.storage())?;
    Ok(Tensor::from_op(out, a.shape(), || Box::new(MulBackward { a: a.clone(), b: b.clone() }), &[a, b]))
}

struct ScaleBackward {
    a: Tensor,
    s: f32,
}

impl GradFn for ScaleBackward {
    fn name(&self) -> &'static str {
        "scale"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        Ok(vec![Some(self.a.backend()?.scale(grad, self.s)?)])
    }
}

/// a * s for a scalar s.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let out = a.backend()?.scale(&a.storage(), s)?;
    Ok(Tensor::from_op(out, a.shape(), || Box::new(ScaleBackward { a: a.clone(), s }), &[a]))
}
