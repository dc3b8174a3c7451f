//! Dropout layer: a fresh mask every forward call in training mode, reproducible from its seed.

use super::{Module, TensorRole};
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Inverted dropout with probability `p`.
#[derive(Debug)]
pub struct Dropout {
    pub p: f32,
    seed: u64,
    calls: AtomicU64,
    training: AtomicBool,
}

impl Dropout {
    /// A dropout layer whose masks derive from `seed` and a per-call counter.
    pub fn new(p: f32, seed: u64) -> Dropout {
        Dropout { p, seed, calls: AtomicU64::new(0), training: AtomicBool::new(true) }
    }

    /// Applies dropout (identity in eval mode).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let training = self.training.load(Ordering::Relaxed);
        if !training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        ops::dropout(x, self.p, true, mix(self.seed, call))
    }

    /// Forward calls made so far in training mode (the mask stream position, for resuming).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sets the mask stream position (restoring a checkpoint).
    pub fn set_calls(&self, calls: u64) {
        self.calls.store(calls, Ordering::Relaxed);
    }
}

/// A well-mixed seed for call `n` of stream `seed` (SplitMix64 finaliser).
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Module for Dropout {
    fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Tensor, TensorRole)) {}
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
