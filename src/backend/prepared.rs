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
        if let Some(value) = self.current(&fits) {
            return value;
        }
        // Made without the lock held: making may use the worker pool, and a pool thread waiting
        // on this lock meanwhile could leave it no thread to run on. Two threads racing here
        // both make it once; either result is the same.
        let value = Arc::new(make());
        *self.cache.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((self.version, value.clone()));
        value
    }

    /// The stored form, if it is of type `T`, from this version and accepted by `fits`.
    fn current<T: Any + Send + Sync>(&self, fits: &impl Fn(&T) -> bool) -> Option<Arc<T>> {
        let entry = self.cache.0.lock().unwrap_or_else(|e| e.into_inner());
        let (version, value) = entry.as_ref()?;
        let value = Arc::clone(value).downcast::<T>().ok()?;
        (*version == self.version && fits(&value)).then_some(value)
    }
}
