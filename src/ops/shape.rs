//! Reshape and flatten: views that share storage; the gradient is reshaped back.

use crate::autograd::GradFn;
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

struct ReshapeBackward {
    input: Tensor,
}

impl GradFn for ReshapeBackward {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        // Same contiguous elements, only the shape differs.
        Ok(vec![Some(grad.clone())])
    }
}

impl Tensor {
    /// The same elements with another shape of equal element count (shares storage).
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                detail: format!("cannot view {:?} ({} elements) as {:?}", self.dims(), self.numel(), shape.dims()),
            });
        }
        let input = self.clone();
        Ok(self.view_with(shape, move || Box::new(ReshapeBackward { input })))
    }

    /// Keeps dimension 0 and flattens the rest: [N, C, H, W] -> [N, C*H*W].
    pub fn flatten(&self) -> Result<Tensor> {
        let d = self.dims();
        if d.is_empty() {
            return Err(Error::ShapeMismatch { op: "flatten", detail: "cannot flatten a scalar".into() });
        }
        let rest: usize = d[1..].iter().product();
        self.reshape([d[0], rest])
    }
}
