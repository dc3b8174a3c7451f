//! Binary cross-entropy with logits, mean over all elements, with an optional per-class
//! `pos_weight` (torch.nn.BCEWithLogitsLoss). Non-finite logits are an error, not a silent NaN.

use super::{expect_rank, expect_same_shape, same_device};
use crate::autograd::GradFn;
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

struct BceBackward {
    logits: Tensor,
    targets: Tensor,
    pos_weight: Option<Tensor>,
}

impl GradFn for BceBackward {
    fn name(&self) -> &'static str {
        "bce_with_logits"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.logits]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let be = self.logits.backend()?;
        let scale = be.copy_to_host(grad)?[0];
        let (rows, classes) = (self.logits.dims()[0], self.logits.dims()[1]);
        let pw = self.pos_weight.as_ref().map(|p| p.storage());
        let g = be.bce_with_logits_backward(
            &self.logits.storage(),
            &self.targets.storage(),
            pw.as_deref(),
            rows,
            classes,
            scale,
        )?;
        Ok(vec![Some(g)])
    }
}

/// Mean BCE-with-logits of logits [N, C] against targets [N, C] in {0, 1} (soft targets are
/// allowed), positives of class c weighted by pos_weight[c]. Returns a scalar tensor.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor, pos_weight: Option<&Tensor>) -> Result<Tensor> {
    let mut all = vec![logits, targets];
    all.extend(pos_weight);
    same_device("bce_with_logits", &all)?;
    expect_rank("bce_with_logits", "logits", logits, 2)?;
    expect_same_shape("bce_with_logits", logits, targets)?;
    super::expect_nonempty("bce_with_logits", logits)?;
    let (rows, classes) = (logits.dims()[0], logits.dims()[1]);
    if let Some(pw) = pos_weight {
        if pw.dims() != [classes] {
            return Err(Error::ShapeMismatch {
                op: "bce_with_logits",
                detail: format!("pos_weight {:?} for {classes} classes", pw.dims()),
            });
        }
    }
    let be = logits.backend()?;
    if !be.all_finite(&logits.storage())? {
        return Err(Error::NonFinite { what: "logits reaching bce_with_logits".into(), step: None });
    }
    if !be.all_finite(&targets.storage())? {
        return Err(Error::NonFinite { what: "targets reaching bce_with_logits".into(), step: None });
    }
    let pw = pos_weight.map(|p| p.storage());
    let value = be.bce_with_logits(&logits.storage(), &targets.storage(), pw.as_deref(), rows, classes)?;
    drop(pw);
    let out = be.full(1, value)?;
    let record = || -> Box<dyn GradFn> {
        Box::new(BceBackward { logits: logits.clone(), targets: targets.clone(), pos_weight: pos_weight.cloned() })
    };
    Ok(Tensor::from_op(out, crate::tensor::Shape::scalar(), record, &[logits]))
}
