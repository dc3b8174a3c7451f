//! The library's error type. Every fallible public call returns [`Result`].

use std::path::PathBuf;
use thiserror::Error;

/// Errors returned by the cxr library.
#[derive(Debug, Error)]
pub enum Error {
    /// Two shapes that an op needs to agree do not.
    #[error("{op}: shape mismatch: {detail}")]
    ShapeMismatch { op: &'static str, detail: String },

    /// An op was given a tensor with no elements where it needs some.
    #[error("{op}: empty tensor (shape {shape:?})")]
    EmptyTensor { op: &'static str, shape: Vec<usize> },

    /// A value that must be finite is NaN or infinite.
    #[error("non-finite value in {what}{}", step.map(|s| format!(" at step {s}")).unwrap_or_default())]
    NonFinite { what: String, step: Option<u64> },

    /// An argument is outside the range an op accepts.
    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument { op: &'static str, detail: String },

    /// Tensors on different devices were combined.
    #[error("{op}: tensors are on different devices ({a} and {b})")]
    DeviceMismatch { op: &'static str, a: String, b: String },

    /// A device could not be used (no driver, no GPU, out of memory, ...).
    #[error("device error: {0}")]
    Device(String),

    /// Autograd was asked for something the graph cannot give.
    #[error("autograd: {0}")]
    Autograd(String),

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file's contents are malformed (a corrupt or hostile header, an unknown dtype, ...).
    #[error("{}: {detail}", path.display())]
    Format { path: PathBuf, detail: String },

    /// Input data is wrong: a CSV row, an image, an array, a split. `location` names the file
    /// (and row or image) so the user can find it.
    #[error("{location}: {detail}")]
    Data { location: String, detail: String },

    /// A weight file does not fit a model: every missing, unexpected and mismatched tensor.
    #[error("{}: weights do not fit the model:\n{report}", path.display())]
    WeightsMismatch { path: PathBuf, report: String },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
    /// A data error at `location` (a file, a file and row, an image name).
    pub fn data(location: impl std::fmt::Display, detail: impl Into<String>) -> Error {
        Error::Data { location: location.to_string(), detail: detail.into() }
    }
    /// A format error in `path`.
    pub fn format(path: impl Into<PathBuf>, detail: impl Into<String>) -> Error {
        Error::Format { path: path.into(), detail: detail.into() }
    }
}

/// Shorthand for results of the cxr library.
pub type Result<T> = std::result::Result<T, Error>;
