//! Reading and writing weights: safetensors through mmap, checkpoints with metadata, and atomic
//! file replacement so a crash never leaves a truncated file behind.

pub mod atomic;
pub mod checkpoint;
pub mod metadata;
pub mod safetensors;

pub use checkpoint::{load_checkpoint, load_model, save_checkpoint, CheckpointMeta, LoadedModel};
pub use metadata::update_meta;
pub use safetensors::{load_into, LoadOptions, LoadReport, WeightFile};
