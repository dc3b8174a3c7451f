//! ReLU and sigmoid. Both backwards read the op's own output, which autograd passes in (the record
//! cannot hold its output without a reference cycle).

use crate::autograd::GradFn;
use crate::backend::Storage;
use crate::error::Result;
use crate::tensor::Tensor;

struct ReluBackward {
    input: Tensor,
}

impl GradFn for ReluBackward {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        Ok(vec![Some(out.backend()?.relu_backward(&out.storage(), grad)?)])
    }
}

/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let out = x.backend()?.relu(&x.storage())?;
    Ok(Tensor::from_op(out, x.shape(), || Box::new(ReluBackward { input: x.clone() }), &[x]))
}

struct SigmoidBackward {
    input: Tensor,
}

impl GradFn for SigmoidBackward {
    fn name(&self) -> &'static str {
        "sigmoid"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        Ok(vec![Some(out.backend()?.sigmoid_backward(&out.storage(), grad)?)])
    }
}

/// 1 / (1 + exp(-x)).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    let out = x.backend()?.sigmoid(&x.storage())?;
    Ok(Tensor::from_op(out, x.shape(), || Box::new(SigmoidBackward { input: x.clone() }), &[x]))
}

impl Tensor {
    /// max(self, 0).
    pub fn relu(&self) -> Result<Tensor> {
        relu(self)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Result<Tensor> {
        sigmoid(self)
    }
}
