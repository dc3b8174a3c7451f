//! Classification metrics for multi-label chest X-ray models.

pub mod auroc;

pub use auroc::{auroc, mean_auroc, ClassAuroc};
