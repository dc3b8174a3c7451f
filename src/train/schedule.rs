//! Learning-rate schedules: linear warm-up, then constant, cosine decay or ReduceLROnPlateau.
//! The state is plain data so a resumed run continues the schedule exactly.

use serde::{Deserialize, Serialize};

/// What happens after warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decay {
    /// Keep the base rate.
    Constant,
    /// Cosine from the base rate down to `base * min_factor` at `total_steps`.
    Cosine { total_steps: u64, min_factor: f32 },
    /// torch's ReduceLROnPlateau in max mode on the validation metric: multiply by `factor` after
    /// `patience` validations without an improvement larger than `threshold` (relative).
    Plateau { factor: f32, patience: u32, threshold: f32, min_lr: f32 },
}

/// A schedule and its running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f32,
    /// The rate ramps linearly as min(1, (step + 1) / warmup_steps); 0 disables warm-up.
    pub warmup_steps: u64,
    pub decay: Decay,
    /// Plateau state: the current multiplier, best metric and validations since it improved.
    plateau_factor: f32,
    best: Option<f64>,
    bad_validations: u32,
}

impl LrSchedule {
    /// A schedule starting at `base_lr`.
    pub fn new(base_lr: f32, warmup_steps: u64, decay: Decay) -> LrSchedule {
        LrSchedule { base_lr, warmup_steps, decay, plateau_factor: 1.0, best: None, bad_validations: 0 }
    }

    /// The learning rate for optimizer step `step` (counting from 0).
    pub fn lr(&self, step: u64) -> f32 {
        let warm = if self.warmup_steps == 0 { 1.0 } else { ((step + 1) as f32 / self.warmup_steps as f32).min(1.0) };
        let decayed = match &self.decay {
            Decay::Constant => self.base_lr,
            Decay::Cosine { total_steps, min_factor } => {
                let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = (step.saturating_sub(self.warmup_steps) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                self.base_lr * (*min_factor + (1.0 - min_factor) * cos as f32)
            }
            Decay::Plateau { min_lr, .. } => (self.base_lr * self.plateau_factor).max(*min_lr),
        };
        decayed * warm
    }

    /// Reports a validation metric (higher is better). Returns true when the rate was reduced.
    pub fn on_validation(&mut self, metric: f64) -> bool {
        let Decay::Plateau { factor, patience, threshold, .. } = self.decay else { return false };
        let improved = self.best.is_none_or(|b| metric > b * (1.0 + threshold as f64));
        if improved {
            self.best = Some(metric);
            self.bad_validations = 0;
            return false;
        }
        self.bad_validations += 1;
        if self.bad_validations > patience {
            self.plateau_factor *= factor;
            self.bad_validations = 0;
            return true;
        }
        false
    }
}
