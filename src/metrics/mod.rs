//! Classification metrics for multi-label chest X-ray models. Pure functions of scores and
//! labels (running a model lives in [`crate::eval`]):
//!
//! - [`auroc`]: exact AUROC (Mann-Whitney with ties) and the mean over classes;
//! - [`roc`]: ROC points as sklearn's `roc_curve`, and the Youden J point;
//! - [`precision_recall`]: average precision as sklearn's `average_precision_score`;
//! - [`threshold`]: confusion counts and decision metrics at per-class thresholds, hamming loss,
//!   subset and label-wise accuracy;
//! - [`bootstrap`]: seeded percentile bootstrap CIs, resampling patients when they are known;
//! - [`report`]: all of it gathered into [`EvalReport`] (`metrics.json`).

pub mod auroc;
pub mod bootstrap;
pub mod precision_recall;
pub mod report;
pub mod roc;
pub mod threshold;

pub use auroc::{auroc, mean_auroc, ClassAuroc};
pub use bootstrap::{bootstrap_auroc, AurocBootstrap, BootstrapOptions, Interval, ResampleUnit};
pub use precision_recall::average_precision;
pub use report::{evaluate, ClassReport, EvalInput, EvalReport, ThresholdChoice};
pub use roc::{roc_curve, youden, RocCurve, YoudenPoint};
pub use threshold::{threshold_metrics, Confusion, ThresholdMetrics};
