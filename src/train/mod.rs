//! Training: optimizers, learning-rate schedules, class weighting, and the training loop.

pub mod optim;
pub mod schedule;

pub use optim::{clip_grad_norm, Optimizer, OptimizerConfig, OptimizerKind};
pub use schedule::{Decay, LrSchedule};
