//! A backend's prepared form of a tensor's data (packed GEMM panels of a weight), kept beside the
//! data and recomputed when the data changes.
//!
//! The tensor owns a [`PreparedCache`] next to its storage and a version counter that every write
//! access bumps; a backend receives both as a [`PreparedSlot`] and asks it for its form, which
//! is rebuilt only when the version moved (a training step) or the form no longer fits (another
//! geometry or SIMD level). Inference therefore prepares each weight once.

use std::any::Any;
use std::sync::{Arc, Mutex};

type Entry = (u64, Arc<dyn Any + Send + Sync>);

/// The stored prepared form, if any, with the data version it was made from.
#[derive(Default)]
pub struct PreparedCache(Mutex<Option<Entry>>);

impl std::fmt::Debug for PreparedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedCache")
    }
}

/// A tensor's [`PreparedCache`] together with the current version of its data.
#[derive(Debug, Clone, Copy)]
pub struct PreparedSlot<'a> {
    version: u64,
    cache: &'a PreparedCache,
}

impl<'a> PreparedSlot<'a> {
    pub(crate) fn new(version: u64, cache: &'a PreparedCache) -> Self {
        PreparedSlot { version, cache }
    }

    /// The prepared form of type `T` made from the current data and accepted by `fits`, made
    /// by `make` (and stored, replacing any other) when there is none.
    pub fn get_or_make<T: Any + Send + Sync>(&self, fits: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> Arc<T> {
        // Held while making, so threads sharing a model prepare a weight once between them.
        let mut entry = self.cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((version, value)) = entry.as_ref() {
            if *version == self.version {
                if let Ok(value) = Arc::clone(value).downcast::<T>() {
                    if fits(&value) {
                        return value;
                    }
                }
            }
        }
        let value = Arc::new(make());
        *entry = Some((self.version, value.clone()));
        value
    }
}
