//! Training: optimizers, learning-rate schedules, class weighting, and the training loop.

pub mod config;
pub mod optim;
pub mod schedule;
pub mod state;
pub mod trainer;
pub mod weights;

pub use config::{PosWeightMode, ScheduleKind, TrainConfig};
pub use optim::{clip_grad_norm, Optimizer, OptimizerConfig, OptimizerKind};
pub use schedule::{Decay, LrSchedule};
pub use trainer::{train, LogRow, Observer, PrintObserver, StepReport, StopReason, TrainSummary};
