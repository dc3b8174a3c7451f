//! Binary cross-entropy with logits, mean over all elements, with optional per-class `pos_weight`
//! and per-class `weight` (torch.nn.BCEWithLogitsLoss). Non-finite inputs are an error, not a
//! silent NaN.

use super::{expect_rank, expect_same_shape, same_device};
use crate::autograd::GradFn;
use crate::backend::{BceWeights, Storage};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

struct BceBackward {
    logits: Tensor,
    targets: Tensor,
    pos_weight: Option<Tensor>,
    class_weight: Option<Tensor>,
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
        let cw = self.class_weight.as_ref().map(|p| p.storage());
        let w = BceWeights { pos_weight: pw.as_deref(), class_weight: cw.as_deref() };
        let g =
            be.bce_with_logits_backward(&self.logits.storage(), &self.targets.storage(), w, rows, classes, scale)?;
        Ok(vec![Some(g)])
    }
}

/// Mean BCE-with-logits of logits [N, C] against targets [N, C] in {0, 1} (soft targets are
/// allowed), positives of class c weighted by pos_weight[c]. Returns a scalar tensor.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor, pos_weight: Option<&Tensor>) -> Result<Tensor> {
    bce_with_logits_weighted(logits, targets, pos_weight, None)
}

/// [`bce_with_logits`] with an additional per-class weight [C] on the whole loss of each class
/// (torch's `weight` broadcast over rows).
pub fn bce_with_logits_weighted(
    logits: &Tensor,
    targets: &Tensor,
    pos_weight: Option<&Tensor>,
    class_weight: Option<&Tensor>,
) -> Result<Tensor> {
    let mut all = vec![logits, targets];
    all.extend(pos_weight);
    all.extend(class_weight);
    same_device("bce_with_logits", &all)?;
    expect_rank("bce_with_logits", "logits", logits, 2)?;
    expect_same_shape("bce_with_logits", logits, targets)?;
    super::expect_nonempty("bce_with_logits", logits)?;
    let (rows, classes) = (logits.dims()[0], logits.dims()[1]);
    for (what, w) in [("pos_weight", pos_weight), ("weight", class_weight)] {
        if let Some(w) = w {
            if w.dims() != [classes] {
                return Err(Error::ShapeMismatch {
                    op: "bce_with_logits",
                    detail: format!("{what} {:?} for {classes} classes", w.dims()),
                });
            }
        }
    }
    let be = logits.backend()?;
    for (what, t) in
        [("logits", Some(logits)), ("targets", Some(targets)), ("pos_weight", pos_weight), ("weight", class_weight)]
    {
        if let Some(t) = t {
            if !be.all_finite(&t.storage())? {
                return Err(Error::NonFinite { what: format!("{what} reaching bce_with_logits"), step: None });
            }
        }
    }
    let pw = pos_weight.map(|p| p.storage());
    let cw = class_weight.map(|p| p.storage());
    let w = BceWeights { pos_weight: pw.as_deref(), class_weight: cw.as_deref() };
    let value = be.bce_with_logits(&logits.storage(), &targets.storage(), w, rows, classes)?;
    drop((pw, cw));
    let out = be.full(1, value)?;
    let record = || -> Box<dyn GradFn> {
        Box::new(BceBackward {
            logits: logits.clone(),
            targets: targets.clone(),
            pos_weight: pos_weight.cloned(),
            class_weight: class_weight.cloned(),
        })
    };
    Ok(Tensor::from_op(out, crate::tensor::Shape::scalar(), record, &[logits]))
}
