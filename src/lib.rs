//! cxr: a deep-learning runtime written from scratch for chest X-ray classification.
//!
//! Layers of the crate, bottom up:
//! - [`backend`]: devices and the [`Backend`](backend::Backend) trait of primitive ops; the CPU
//!   backend's hand-written kernels live in `backend::cpu`.
//! - [`tensor`]: [`Tensor`], shapes, dtypes, seeded initialisation.
//! - [`ops`]: differentiable ops, each with its forward and backward side by side.
//! - [`autograd`]: the reverse-mode engine, grad mode and gradient retrieval.
//! - [`nn`]: layers with torchvision-compatible parameter names.
//! - [`bench`]: the measurements behind `tools bench` and `benches/`.
//! - [`metrics`]: AUROC, ROC, AP, thresholds, bootstrap CIs and the evaluation report;
//!   [`eval`] runs a model over a dataset split to feed them.
//! - [`explain`]: Grad-CAM, Grad-CAM++ and HiResCAM, colormaps, overlays, panels, localisation.
//! - [`Classifier`]: the device API: load a checkpoint, predict, explain (see [`classifier`]).

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod classifier;
pub mod data;
pub mod error;
pub mod eval;
pub mod explain;
pub mod io;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod ops;
pub mod plot;
pub mod tensor;
pub mod train;

pub use autograd::{no_grad, Gradients};
pub use backend::cpu::parallel::run_on_pool;
pub use backend::{Device, Storage};
pub use classifier::{Classifier, FindingScore, Prediction};
pub use error::{Error, Result};
pub use explain::{CamMethod, CamOptions, Heatmap};
pub use tensor::{DType, Shape, Tensor};

/// Sets the number of worker threads the CPU kernels use. Must be called before the first kernel
/// runs; later calls return an error. Without it, `RAYON_NUM_THREADS` or the core count decides.
pub fn set_num_threads(threads: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| Error::InvalidArgument { op: "set_num_threads", detail: e.to_string() })
}

/// The number of worker threads the CPU kernels use.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}
