//! Matrix product and the fully connected layer y = x W^T + b (torch.nn.Linear's layout).

use super::{expect_nonempty, expect_rank, same_device};
use crate::autograd::GradFn;
use crate::backend::{Layout, Storage};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

struct MatmulBackward {
    a: Tensor,
    b: Tensor,
}

impl GradFn for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let be = self.a.backend()?;
        let (m, k, n) = (self.a.dims()[0], self.a.dims()[1], self.b.dims()[1]);
        // dA = dC B^T  [m x n][n x k];  dB = A^T dC  [k x m][m x n]
        let da = self
            .a
            .requires_grad()
            .then(|| be.matmul(grad, Layout::Normal, &self.b.storage(), Layout::Transposed, m, n, k))
            .transpose()?;
        let db = self
            .b
            .requires_grad()
            .then(|| be.matmul(&self.a.storage(), Layout::Transposed, grad, Layout::Normal, k, m, n))
            .transpose()?;
        Ok(vec![da, db])
    }
}

/// C = A B for A [m, k] and B [k, n].
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_device("matmul", &[a, b])?;
    expect_rank("matmul", "left operand", a, 2)?;
    expect_rank("matmul", "right operand", b, 2)?;
    let (m, k, n) = (a.dims()[0], a.dims()[1], b.dims()[1]);
    if b.dims()[0] != k {
        return Err(Error::ShapeMismatch { op: "matmul", detail: format!("{:?} x {:?}", a.dims(), b.dims()) });
    }
    let out = a.backend()?.matmul(&a.storage(), Layout::Normal, &b.storage(), Layout::Normal, m, k, n)?;
    Ok(Tensor::from_op(out, [m, n], || Box::new(MatmulBackward { a: a.clone(), b: b.clone() }), &[a, b]))
}

struct LinearBackward {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
}

impl GradFn for LinearBackward {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.w];
        v.extend(self.b.as_ref());
        v
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let be = self.x.backend()?;
        let (rows, inf, outf) = (self.x.dims()[0], self.x.dims()[1], self.w.dims()[0]);
        // dx = dy W  [rows x out][out x in];  dW = dy^T x  [out x rows][rows x in];  db = sum dy
        let dx = self
            .x
            .requires_grad()
            .then(|| be.matmul(grad, Layout::Normal, &self.w.storage(), Layout::Normal, rows, outf, inf))
            .transpose()?;
        let dw = self
            .w
            .requires_grad()
            .then(|| be.matmul(grad, Layout::Transposed, &self.x.storage(), Layout::Normal, outf, rows, inf))
            .transpose()?;
        let mut grads = vec![dx, dw];
        if let Some(b) = &self.b {
            grads.push(b.requires_grad().then(|| be.sum_rows(grad, rows, outf)).transpose()?);
        }
        Ok(grads)
    }
}

/// y = x W^T + b for x [N, in], W [out, in], b [out].
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let mut all = vec![x, w];
    all.extend(b);
    same_device("linear", &all)?;
    expect_rank("linear", "input", x, 2)?;
    expect_rank("linear", "weight", w, 2)?;
    expect_nonempty("linear", x)?;
    let (rows, inf, outf) = (x.dims()[0], x.dims()[1], w.dims()[0]);
    if w.dims()[1] != inf {
        return Err(Error::ShapeMismatch {
            op: "linear",
            detail: format!("input {:?} has {inf} features, weight {:?} expects {}", x.dims(), w.dims(), w.dims()[1]),
        });
    }
    if let Some(b) = b {
        if b.dims() != [outf] {
            return Err(Error::ShapeMismatch {
                op: "linear",
                detail: format!("bias {:?}, expected [{outf}]", b.dims()),
            });
        }
    }
    let be = x.backend()?;
    let mut out = be.matmul(&x.storage(), Layout::Normal, &w.storage(), Layout::Transposed, rows, inf, outf)?;
    if let Some(b) = b {
        be.add_row_bias_assign(&mut out, &b.storage(), rows, outf)?;
    }
    let record = || -> Box<dyn GradFn> { Box::new(LinearBackward { x: x.clone(), w: w.clone(), b: b.cloned() }) };
    Ok(Tensor::from_op(out, [rows, outf], record, &all))
}

impl Tensor {
    /// Matrix product with `other`.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        matmul(self, other)
    }
    /// Transpose of a 2-D tensor (a copy; not differentiable).
    pub fn transpose2d(&self) -> Result<Tensor> {
        expect_rank("transpose2d", "input", self, 2)?;
        let (r, c) = (self.dims()[0], self.dims()[1]);
        Tensor::from_storage(self.backend()?.transpose2d(&self.storage(), r, c)?, [c, r])
    }
}
