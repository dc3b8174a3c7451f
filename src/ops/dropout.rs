//! Inverted dropout: in training, zero each element with probability p and scale the rest by
//! 1/(1-p); in eval, the identity. The mask is drawn from Philox(seed, index) so a run is
//! reproducible and every device draws the same mask.

use crate::autograd::GradFn;
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

struct DropoutBackward {
    input: Tensor,
    mask: Storage,
}

impl GradFn for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.input]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        Ok(vec![Some(self.input.backend()?.mul(grad, &self.mask)?)])
    }
}

/// Dropout with probability `p` in [0, 1). `seed` selects the mask; callers change it per step.
pub fn dropout(x: &Tensor, p: f32, training: bool, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::InvalidArgument { op: "dropout", detail: format!("p = {p} is outside [0, 1)") });
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let be = x.backend()?;
    let mask = be.dropout_mask(x.numel(), p, seed)?;
    let out = be.mul(&x.storage(), &mask)?;
    Ok(Tensor::from_op(out, x.shape(), || Box::new(DropoutBackward { input: x.clone(), mask }), &[x]))
}
