//! Caching allocator: freed device blocks are kept by size class and handed out again, so a
//! training step, which frees and allocates the same sizes every iteration, calls the driver's
//! allocator only in the first step (cudaMalloc synchronises the device and costs ~100 us).

use std::collections::HashMap;
use std::sync::Mutex;

/// Blocks smaller than this are rounded up to a power of two; larger ones to a multiple of it.
const LARGE: usize = 1 << 20;

/// The size class a request of `bytes` is served from.
pub fn size_class(bytes: usize) -> usize {
    if bytes <= LARGE {
        bytes.next_power_of_two().max(256)
    } else {
        bytes.div_ceil(LARGE) * LARGE
    }
}

/// Free blocks by size class, and how many bytes are cached.
#[derive(Debug, Default)]
pub struct Cache {
    free: Mutex<HashMap<usize, Vec<u64>>>,
}

impl Cache {
    /// A cached block of exactly `class` bytes, if any.
    pub fn take(&self, class: usize) -> Option<u64> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&class)?.pop()
    }
    /// Keeps a block for reuse.
    pub fn put(&self, class: usize, ptr: u64) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).entry(class).or_default().push(ptr);
    }
    /// Every cached block with its size, emptying the cache (before retrying a failed allocation).
    pub fn drain(&self) -> Vec<(u64, usize)> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.drain().flat_map(|(class, ptrs)| ptrs.into_iter().map(move |p| (p, class))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_and_blocks_are_reused() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(LARGE + 1), 2 * LARGE);
        let c = Cache::default();
        c.put(1024, 0x1000);
        assert_eq!(c.take(512), None);
        assert_eq!(c.take(1024), Some(0x1000));
        assert_eq!(c.take(1024), None);
        c.put(256, 0x2000);
        assert_eq!(c.drain(), vec![(0x2000, 256)]);
    }
}
