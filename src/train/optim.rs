//! Optimizers over a model's trainable parameters: SGD (momentum, Nesterov), Adam and AdamW with
//! torch.optim's exact update rules, plus gradient-norm clipping. The per-parameter state lives on
//! the parameters' device and the update runs there (`Backend::sgd_step`, `Backend::adam_step`).

use crate::backend::{AdamStep, SgdStep, Storage};
use crate::error::{Error, Result};
use crate::nn::NamedTensor;
use serde::{Deserialize, Serialize};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

/// Optimizer hyper-parameters (torch.optim's defaults where they have one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub weight_decay: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// SGD dampening.
    pub dampening: f32,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl OptimizerConfig {
    /// Defaults for `kind` at learning rate `lr` (AdamW: weight decay 0.01 as torch).
    pub fn new(kind: OptimizerKind, lr: f32) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            lr,
            weight_decay: if kind == OptimizerKind::AdamW { 0.01 } else { 0.0 },
            momentum: if kind == OptimizerKind::Sgd { 0.9 } else { 0.0 },
            dampening: 0.0,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Named host copies of optimizer buffers.
pub type NamedBuffers = Vec<(String, Vec<f32>)>;

/// Per-parameter state: SGD uses `a` as its momentum buffer; Adam uses `a` = m, `b` = v.
struct Slot {
    param: NamedTensor,
    a: Storage,
    b: Storage,
}

/// An optimizer bound to a set of parameters.
pub struct Optimizer {
    config: OptimizerConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl Optimizer {
    /// An optimizer over the parameters that require grad (frozen ones are left out).
    pub fn new(config: OptimizerConfig, params: Vec<NamedTensor>) -> Result<Optimizer> {
        let mut slots = Vec::new();
        for p in params.into_iter().filter(|p| p.tensor.requires_grad()) {
            let be = p.tensor.backend()?;
            slots.push(Slot { a: be.full(0, 0.0)?, b: be.full(0, 0.0)?, param: p });
        }
        Ok(Optimizer { config, slots, step: 0 })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Number of parameters being optimised.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when every parameter is frozen.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Applies one update at learning rate `lr` to every parameter that has a gradient
    /// (parameters without one are skipped, as in torch).
    pub fn step(&mut self, lr: f32) -> Result<()> {
        self.step += 1;
        let c = &self.config;
        for slot in &mut self.slots {
            let Some(grad) = slot.param.tensor.grad() else { continue };
            let be = slot.param.tensor.backend()?;
            let mut p = slot.param.tensor.storage_mut();
            let g = grad.storage();
            match c.kind {
                OptimizerKind::Sgd => {
                    let h = SgdStep {
                        lr,
                        momentum: c.momentum,
                        dampening: c.dampening,
                        weight_decay: c.weight_decay,
                        nesterov: c.nesterov,
                    };
                    be.sgd_step(&mut p, &g, &mut slot.a, &h)?;
                }
                OptimizerKind::Adam | OptimizerKind::AdamW => {
                    let h = AdamStep {
                        lr,
                        beta1: c.beta1,
                        beta2: c.beta2,
                        eps: c.eps,
                        weight_decay: c.weight_decay,
                        decoupled: c.kind == OptimizerKind::AdamW,
                        step: self.step,
                    };
                    be.adam_step(&mut p, &g, &mut slot.a, &mut slot.b, &h)?;
                }
            }
        }
        Ok(())
    }

    /// Clears every parameter's gradient.
    pub fn zero_grad(&self) {
        self.slots.iter().for_each(|s| s.param.tensor.zero_grad());
    }

    /// The optimizer state as named host vectors (`<param>.exp_avg`, `<param>.exp_avg_sq`,
    /// `<param>.momentum_buffer`) plus the step count, for checkpoints and exact resumption.
    pub fn state(&self) -> Result<(u64, NamedBuffers)> {
        let (a_name, b_name) = self.state_names();
        let mut out = Vec::new();
        for s in &self.slots {
            let be = s.param.tensor.backend()?;
            if !s.a.is_empty() {
                out.push((format!("{}.{a_name}", s.param.name), be.copy_to_host(&s.a)?));
            }
            if !s.b.is_empty() {
                out.push((format!("{}.{b_name}", s.param.name), be.copy_to_host(&s.b)?));
            }
        }
        Ok((self.step, out))
    }

    /// Restores state saved by [`state`](Self::state). Errors name a buffer whose size does not
    /// match its parameter.
    pub fn load_state(&mut self, step: u64, mut state: std::collections::HashMap<String, Vec<f32>>) -> Result<()> {
        let (a_name, b_name) = self.state_names();
        for s in &mut self.slots {
            let be = s.param.tensor.backend()?;
            for (suffix, slot) in [(a_name, &mut s.a), (b_name, &mut s.b)] {
                let key = format!("{}.{suffix}", s.param.name);
                if let Some(v) = state.remove(&key) {
                    if v.len() != s.param.tensor.numel() {
                        return Err(Error::InvalidArgument {
                            op: "Optimizer::load_state",
                            detail: format!(
                                "{key} has {} values for a parameter of {}",
                                v.len(),
                                s.param.tensor.numel()
                            ),
                        });
                    }
                    *slot = be.copy_from_host(v)?;
                }
            }
        }
        self.step = step;
        Ok(())
    }

    fn state_names(&self) -> (&'static str, &'static str) {
        match self.config.kind {
            OptimizerKind::Sgd => ("momentum_buffer", "unused"),
            _ => ("exp_avg", "exp_avg_sq"),
        }
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm` (torch's
/// clip_grad_norm_). Returns the norm before clipping. A non-finite norm is an error.
pub fn clip_grad_norm(params: &[NamedTensor], max_norm: f32) -> Result<f32> {
    let mut total = 0.0f64;
    let grads: Vec<_> = params.iter().filter_map(|p| p.tensor.grad()).collect();
    for g in &grads {
        total += g.backend()?.sum_squares(&g.storage())?;
    }
    let norm = total.sqrt() as f32;
    if !norm.is_finite() {
        return Err(Error::NonFinite { what: "gradient norm".into(), step: None });
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in &grads {
            let scaled = g.backend()?.scale(&g.storage(), coef)?;
            *g.storage_mut() = scaled;
        }
    }
    Ok(norm)
}
