//! Recycled host buffers: large f32 vectors freed by one op are handed to the next op that asks
//! for the same length, instead of going back to the operating system.
//!
//! Why: glibc serves large allocations with fresh `mmap`s and unmaps them on free, so every
//! activation and gradient of a training step page-faults its way in and the kernel zeroes each
//! page first. For ResNet18 at batch 32 that was a sixth of a step (`clear_page_erms` and the
//! fault path in a profile). Training repeats the same shapes every step, so an exact-length
//! free list turns those into reuse. Small vectors are left to malloc, which already recycles
//! them cheaply.
//!
//! A buffer from [`uninit`] holds stale values from its previous use (always valid f32s, so
//! reading one is not undefined behaviour, only meaningless): it is for outputs the kernel
//! overwrites completely. [`zeroed`] is for accumulators.
//!
//! The pool keeps at most [`limit`] bytes (by default half of physical memory); beyond that the
//! longest-pooled buffers are freed. `CXR_HOST_POOL_MB` sets the limit at start-up (0 turns
//! recycling off); [`set_limit`] changes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Buffers shorter than this many f32s (256 KiB) are not pooled: malloc keeps them in its heap.
pub const MIN_POOLED: usize = 1 << 16;

/// Pool limit in bytes when `CXR_HOST_POOL_MB` is unset and the machine's memory is unknown.
const FALLBACK_LIMIT: usize = 4 << 30;

/// The default limit: half of physical memory. A workload that repeats its shapes (training,
/// batched inference) never pools more than its own peak, so the limit only matters when shapes
/// keep changing; it must not be below the peak, or every step frees what the next one needs
/// (DenseNet121 at batch 16 peaks near 4.5 GB).
fn default_limit() -> usize {
    physical_memory().map_or(FALLBACK_LIMIT, |bytes| bytes / 2)
}

/// Total physical memory in bytes, where the platform says (Linux: `/proc/meminfo`).
fn physical_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Free buffers by length, each list oldest first, with a global age counter for eviction.
#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<(u64, Vec<f32>)>>,
    bytes: usize,
    clock: u64,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(Mutex::default)
}

fn limit_cell() -> &'static AtomicUsize {
    static LIMIT: OnceLock<AtomicUsize> = OnceLock::new();
    LIMIT.get_or_init(|| {
        let from_env = std::env::var("CXR_HOST_POOL_MB").ok().and_then(|v| v.trim().parse::<usize>().ok());
        AtomicUsize::new(from_env.map_or_else(default_limit, |mb| mb.saturating_mul(1 << 20)))
    })
}

/// The most bytes of free buffers kept for reuse.
pub fn limit() -> usize {
    limit_cell().load(Ordering::Relaxed)
}

/// Sets the pool limit in bytes (0: never keep a buffer) and frees what no longer fits.
pub fn set_limit(bytes: usize) {
    limit_cell().store(bytes, Ordering::Relaxed);
    let mut p = lock();
    p.evict_to(bytes);
}

static POISON: AtomicBool = AtomicBool::new(false);

/// For tests: while on, every [`uninit`] buffer is filled with NaN first, so a kernel that reads
/// an output element before writing it shows up as NaN in its result instead of passing on
/// whatever a fresh page or an earlier op left there.
pub fn set_poison(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

/// Bytes currently held in free buffers.
pub fn pooled_bytes() -> usize {
    lock().bytes
}

/// Frees every pooled buffer (the limit stays).
pub fn clear() {
    let mut p = lock();
    p.evict_to(0);
}

fn lock() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while holding the lock leaves the lists consistent (every mutation is a single
    // push, pop or remove), so a poisoned pool is still usable.
    pool().lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    fn take(&mut self, len: usize) -> Option<Vec<f32>> {
        let list = self.free.get_mut(&len)?;
        // Most recently freed first: its pages are the likeliest to still be in cache.
        let (_, buf) = list.pop()?;
        if list.is_empty() {
            self.free.remove(&len);
        }
        self.bytes -= len * 4;
        Some(buf)
    }

    fn put(&mut self, buf: Vec<f32>, limit: usize) {
        let bytes = buf.len() * 4;
        if bytes > limit {
            return;
        }
        self.evict_to(limit - bytes);
        self.clock += 1;
        self.bytes += bytes;
        self.free.entry(buf.len()).or_default().push((self.clock, buf));
    }

    /// Frees the longest-pooled buffers until at most `target` bytes remain.
    fn evict_to(&mut self, target: usize) {
        while self.bytes > target {
            let oldest = self.free.iter().min_by_key(|(_, list)| list[0].0).map(|(&len, _)| len);
            let Some(len) = oldest else { break };
            let list = self.free.get_mut(&len).expect("the key was just found");
            list.remove(0);
            if list.is_empty() {
                self.free.remove(&len);
            }
            self.bytes -= len * 4;
        }
    }
}

/// A vector of `len` f32s whose contents are unspecified (stale values or zeros). Every element
/// must be written before it is read.
pub fn uninit(len: usize) -> Vec<f32> {
    let recycled = if len >= MIN_POOLED { lock().take(len) } else { None };
    // Fresh memory from the allocator: zero pages mapped on first touch.
    let mut buf = recycled.unwrap_or_else(|| vec![0.0; len]);
    if POISON.load(Ordering::Relaxed) {
        buf.fill(f32::NAN);
    }
    buf
}

/// A vector of `len` zeros.
pub fn zeroed(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED {
        if let Some(mut buf) = lock().take(len) {
            buf.fill(0.0);
            return buf;
        }
    }
    vec![0.0; len]
}

/// A copy of `src`.
pub fn copy_of(src: &[f32]) -> Vec<f32> {
    let mut out = uninit(src.len());
    out.copy_from_slice(src);
    out
}

/// Large vectors that own exactly their length are pooled; malloc recycles small ones itself.
fn worth_keeping(buf: &Vec<f32>) -> bool {
    buf.len() >= MIN_POOLED && buf.len() == buf.capacity()
}

/// Offers a vector no longer needed for reuse. Only vectors whose length equals their capacity
/// are kept (so a later [`uninit`] of that length gets exactly the memory it asked for).
pub fn recycle(buf: Vec<f32>) {
    if !worth_keeping(&buf) {
        return;
    }
    let limit = limit();
    if limit == 0 {
        return;
    }
    lock().put(buf, limit);
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is process-wide and tests run in parallel, so each test uses lengths no other
    // test (or kernel in this test binary) asks for.

    #[test]
    fn a_freed_buffer_is_reused_for_the_same_length() {
        let len = MIN_POOLED + 12_345;
        let mut a = uninit(len);
        a[7] = 42.0;
        let ptr = a.as_ptr();
        recycle(a);
        let b = uninit(len);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b[7], 42.0, "uninit hands the old contents back");
        recycle(b);
        let c = zeroed(len);
        assert_eq!(c.as_ptr(), ptr);
        assert!(c.iter().all(|&v| v == 0.0), "zeroed clears a recycled buffer");
    }

    #[test]
    fn small_and_oversized_capacity_buffers_are_not_pooled() {
        assert!(!worth_keeping(&vec![1.0f32; MIN_POOLED - 1]));
        assert!(worth_keeping(&vec![1.0f32; MIN_POOLED]));
        let mut spare = Vec::with_capacity(MIN_POOLED + 100);
        spare.resize(MIN_POOLED, 0.0f32);
        assert!(!worth_keeping(&spare));
    }

    #[test]
    fn eviction_frees_the_longest_pooled_first_and_respects_the_limit() {
        let mut p = Pool::default();
        let (a, b) = (MIN_POOLED + 1, MIN_POOLED + 2);
        let limit = (a + b) * 4 + 8;
        p.put(vec![0.0; a], limit);
        p.put(vec![0.0; b], limit);
        assert_eq!(p.bytes, (a + b) * 4);
        // A third buffer does not fit beside both: the oldest (a) goes.
        p.put(vec![0.0; b], limit);
        assert!(p.take(a).is_none());
        assert_eq!(p.bytes, 2 * b * 4);
        assert!(p.take(b).is_some() && p.take(b).is_some() && p.take(b).is_none());
        assert_eq!(p.bytes, 0);
        // A buffer larger than the limit is never kept.
        p.put(vec![0.0; a], a * 4 - 1);
        assert_eq!(p.bytes, 0);
    }
}
