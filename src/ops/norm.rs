//! Batch normalisation over [N, C] (BatchNorm1d) or [N, C, H, W] (BatchNorm2d), as PyTorch
//! defines it: training mode normalises with the batch's biased variance and updates the running
//! statistics with `momentum` using the unbiased variance; eval mode uses the running statistics.

use super::same_device;
use crate::autograd::GradFn;
use crate::backend::{BatchNormRelu, NormShape, Storage};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The buffers and hyper-parameters of one batch-norm layer.
#[derive(Debug, Clone)]
pub struct BatchNormState {
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub momentum: f32,
    pub eps: f32,
}

struct BatchNormBackward {
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    s: NormShape,
    mean: Storage,
    inv_std: Storage,
    batch_stats: bool,
}

impl GradFn for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch_norm"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x, &self.gamma, &self.beta]
    }
    fn backward(&self, _out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let be = self.x.backend()?;
        let g = be.batch_norm_backward(
            self.s,
            &self.x.storage(),
            grad,
            &self.gamma.storage(),
            &self.mean,
            &self.inv_std,
            self.batch_stats,
        )?;
        Ok(vec![
            self.x.requires_grad().then_some(g.input),
            self.gamma.requires_grad().then_some(g.gamma),
            self.beta.requires_grad().then_some(g.beta),
        ])
    }
}

fn norm_shape(x: &Tensor) -> Result<NormShape> {
    let d = x.dims();
    match d.len() {
        2 | 4 => Ok(NormShape { batch: d[0], channels: d[1], plane: d[2..].iter().product() }),
        _ => Err(Error::ShapeMismatch {
            op: "batch_norm",
            detail: format!("input must be [N, C] or [N, C, H, W], got {d:?}"),
        }),
    }
}

/// The input's normalisation shape, once devices, parameter shapes and emptiness are checked.
fn checked_shape(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState) -> Result<NormShape> {
    same_device("batch_norm", &[x, gamma, beta, &state.running_mean, &state.running_var])?;
    let s = norm_shape(x)?;
    check_params(s, x.dims(), gamma, beta, state)?;
    Ok(s)
}

/// Parameters and statistics on the input's device with one value per channel; a non-empty
/// input.
fn check_params(s: NormShape, input: &[usize], gamma: &Tensor, beta: &Tensor, state: &BatchNormState) -> Result<()> {
    same_device("batch_norm", &[gamma, beta, &state.running_mean, &state.running_var])?;
    for (what, t) in
        [("weight", gamma), ("bias", beta), ("running_mean", &state.running_mean), ("running_var", &state.running_var)]
    {
        if t.dims() != [s.channels] {
            return Err(Error::ShapeMismatch {
                op: "batch_norm",
                detail: format!("{what} {:?} for input {input:?} with {} channels", t.dims(), s.channels),
            });
        }
    }
    if s.is_empty() {
        return Err(Error::EmptyTensor { op: "batch_norm", shape: input.to_vec() });
    }
    Ok(())
}

/// Batch statistics need more than one value per channel.
fn check_batch_statistics(s: NormShape, x: &Tensor) -> Result<()> {
    if s.per_channel() < 2 {
        return Err(Error::InvalidArgument {
            op: "batch_norm",
            detail: format!("training needs more than one value per channel, got input {:?}", x.dims()),
        });
    }
    Ok(())
}

/// Batch norm of `x` with affine parameters gamma (weight) and beta (bias).
pub fn batch_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, state: &BatchNormState, training: bool) -> Result<Tensor> {
    let s = checked_shape(x, gamma, beta, state)?;
    if training {
        check_batch_statistics(s, x)?;
    }
    let be = x.backend()?;
    let (out, mean, inv_std) = if training {
        let saved = be.batch_norm_train(
            s,
            &x.storage(),
            &gamma.storage(),
            &beta.storage(),
            &mut state.running_mean.storage_mut(),
            &mut state.running_var.storage_mut(),
            state.momentum,
            state.eps,
        )?;
        (saved.output, saved.mean, saved.inv_std)
    } else {
        let rm = state.running_mean.storage();
        let rv = state.running_var.storage();
        let out = be.batch_norm_eval(s, &x.storage(), &gamma.storage(), &beta.storage(), &rm, &rv, state.eps)?;
        // Only a recorded graph needs the statistics for backward.
        let needs = crate::autograd::is_grad_enabled() && [x, gamma, beta].iter().any(|t| t.requires_grad());
        let inv = if needs { be.inv_std(&rv, state.eps)? } else { be.full(0, 0.0)? };
        (out, rm.clone(), inv)
    };
    let record = || -> Box<dyn GradFn> {
        Box::new(BatchNormBackward {
            x: x.clone(),
            gamma: gamma.clone(),
            beta: beta.clone(),
            s,
            mean,
            inv_std,
            batch_stats: training,
        })
    };
    Ok(Tensor::from_op(out, x.shape(), record, &[x, gamma, beta]))
}

/// relu(batch_norm(x)): the pre-activation unit of DenseNet. In eval mode with no graph recorded
/// (inference) it is one pass over x; in training mode one op ([`batch_norm_add_relu`]); in eval
/// mode with a graph, the two differentiable ops.
pub fn batch_norm_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    state: &BatchNormState,
    training: bool,
) -> Result<Tensor> {
    if training {
        return batch_norm_add_relu(x, None, gamma, beta, state);
    }
    let records = crate::autograd::is_grad_enabled() && [x, gamma, beta].iter().any(|t| t.requires_grad());
    if records {
        return super::relu(&batch_norm(x, gamma, beta, state, false)?);
    }
    let s = checked_shape(x, gamma, beta, state)?;
    let (rm, rv) = (state.running_mean.storage(), state.running_var.storage());
    let out =
        x.backend()?.batch_norm_eval_relu(s, &x.storage(), &gamma.storage(), &beta.storage(), &rm, &rv, state.eps)?;
    Tensor::from_storage(out, x.shape().clone())
}

struct BatchNormReluBackward {
    x: Tensor,
    residual: Option<Tensor>,
    gamma: Tensor,
    beta: Tensor,
    s: NormShape,
    mean: Storage,
    inv_std: Storage,
}

impl GradFn for BatchNormReluBackward {
    fn name(&self) -> &'static str {
        "batch_norm_add_relu"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut inputs = vec![&self.x, &self.gamma, &self.beta];
        inputs.extend(&self.residual);
        inputs
    }
    fn backward(&self, out: &Tensor, grad: &Storage) -> Result<Vec<Option<Storage>>> {
        let be = self.x.backend()?;
        let (gamma, beta) = (self.gamma.storage(), self.beta.storage());
        let params = BatchNormRelu { gamma: &gamma, beta: &beta, mean: &self.mean, inv_std: &self.inv_std };
        let g = be.batch_norm_relu_backward(
            self.s,
            &self.x.storage(),
            &out.storage(),
            grad,
            params,
            self.residual.is_some(),
        )?;
        let mut grads = vec![
            self.x.requires_grad().then_some(g.norm.input),
            self.gamma.requires_grad().then_some(g.norm.gamma),
            self.beta.requires_grad().then_some(g.norm.beta),
        ];
        if let Some(r) = &self.residual {
            grads.push(g.residual.filter(|_| r.requires_grad()));
        }
        Ok(grads)
    }
}

/// relu(batch_norm(x) + residual) in training mode (batch statistics, running statistics
/// updated), or relu(batch_norm(x)) without a residual: one op, forward and backward, where the
/// separate batch norm, add and ReLU would each pass over the whole tensor again.
pub fn batch_norm_add_relu(
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    state: &BatchNormState,
) -> Result<Tensor> {
    let s = checked_shape(x, gamma, beta, state)?;
    check_batch_statistics(s, x)?;
    if let Some(r) = residual {
        same_device("batch_norm_add_relu", &[x, r])?;
        if r.dims() != x.dims() {
            return Err(Error::ShapeMismatch {
                op: "batch_norm_add_relu",
                detail: format!("residual {:?} for input {:?}", r.dims(), x.dims()),
            });
        }
    }
    let be = x.backend()?;
    let residual_storage = residual.map(|r| r.storage());
    let saved = be.batch_norm_train_relu(
        s,
        &x.storage(),
        residual_storage.as_deref(),
        &gamma.storage(),
        &beta.storage(),
        &mut state.running_mean.storage_mut(),
        &mut state.running_var.storage_mut(),
        state.momentum,
        state.eps,
    )?;
    drop(residual_storage);
    let record = || -> Box<dyn GradFn> {
        Box::new(BatchNormReluBackward {
            x: x.clone(),
            residual: residual.cloned(),
            gamma: gamma.clone(),
            beta: beta.clone(),
            s,
            mean: saved.mean,
            inv_std: saved.inv_std,
        })
    };
    let mut inputs = vec![x, gamma, beta];
    inputs.extend(residual);
    Ok(Tensor::from_op(saved.output, x.shape(), record, &inputs))
}

/// relu(batch_norm(cat_channels(parts))): the input of every DenseNet layer. In eval mode with no
/// graph recorded (inference) it reads the parts directly and never builds the concatenation;
/// otherwise it is the separate differentiable ops.
pub fn cat_batch_norm_relu(
    parts: &[&Tensor],
    gamma: &Tensor,
    beta: &Tensor,
    state: &BatchNormState,
    training: bool,
) -> Result<Tensor> {
    let records = crate::autograd::is_grad_enabled() && parts.iter().chain([&gamma, &beta]).any(|t| t.requires_grad());
    if let [only] = parts {
        return batch_norm_relu(only, gamma, beta, state, training);
    }
    if training || records {
        return batch_norm_relu(&super::cat_channels(parts)?, gamma, beta, state, training);
    }
    let (shape, plane) = super::concat::cat_shape(parts)?;
    same_device("batch_norm", &[parts[0], gamma])?;
    if shape.len() != 2 && shape.len() != 4 {
        return Err(Error::ShapeMismatch {
            op: "batch_norm",
            detail: format!("input must be [N, C] or [N, C, H, W], got {shape:?}"),
        });
    }
    let s = NormShape { batch: shape[0], channels: shape[1], plane };
    check_params(s, &shape, gamma, beta, state)?;
    let storages: Vec<_> = parts.iter().map(|p| p.storage()).collect();
    let pairs: Vec<(&Storage, usize)> = storages.iter().zip(parts).map(|(st, p)| (&**st, p.dims()[1])).collect();
    let (rm, rv) = (state.running_mean.storage(), state.running_var.storage());
    let be = parts[0].backend()?;
    let out = be.concat_batch_norm_eval_relu(&pairs, s, &gamma.storage(), &beta.storage(), &rm, &rv, state.eps)?;
    drop(pairs);
    Tensor::from_storage(out, shape)
}
