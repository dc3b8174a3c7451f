//! Per-thread scratch buffers and a shared output handle for tasks writing disjoint regions.

use std::cell::RefCell;
use std::marker::PhantomData;

/// Which per-thread buffer a caller wants; a task may hold several at once, one per slot.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    /// im2col / col2im column blocks.
    Cols = 0,
    /// GEMM results before they are scattered to the NCHW output, or a weight accumulator.
    Out = 1,
    /// Output-gradient rows gathered from several images into one contiguous block.
    Gather = 2,
}

/// Buffers kept per slot and thread: one per level of task nesting seen at once.
const KEPT_PER_SLOT: usize = 4;

thread_local! {
    // Buffers are moved out while in use, so a task that rayon starts on this thread while
    // another one waits (work stealing inside a nested join) takes the next spare buffer instead
    // of aliasing the busy one. Keeping spares (rather than only the one largest buffer) stops
    // such nested tasks from allocating, and page-faulting in, a fresh buffer every time.
    static SLOTS: [RefCell<Vec<Vec<f32>>>; 3] =
        const { [RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// Runs `f` on one of this thread's buffers of `slot`, grown to at least `len` floats. The
/// contents are stale values from earlier calls: callers overwrite every element they read.
pub(super) fn with_scratch<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let idx = slot as usize;
    let mut buf = SLOTS.with(|s| s[idx].borrow_mut().pop()).unwrap_or_default();
    if buf.len() < len {
        // Growing only: buffers keep the largest size seen so repeated calls never allocate.
        buf = vec![0.0; len];
    }
    let result = f(&mut buf[..len]);
    SLOTS.with(|s| {
        let mut spares = s[idx].borrow_mut();
        spares.push(buf);
        if spares.len() > KEPT_PER_SLOT {
            // Largest last, so the outermost (next) call gets the largest; the smallest goes.
            spares.sort_by_key(Vec::len);
            spares.remove(0);
        }
    });
    result
}

/// A mutable output shared by parallel tasks that each write their own disjoint elements, where
/// the regions interleave in memory (a block of rows and columns of an NCHW tensor) so the slice
/// cannot be split safely up front.
pub(super) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: the handle is only a pointer to a slice borrowed mutably for 'a; `SharedOut::slice`'s
// contract (disjoint ranges across threads) is what keeps concurrent use free of data races.
unsafe impl Send for SharedOut<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(super) fn new(out: &'a mut [f32]) -> Self {
        SharedOut { ptr: out.as_mut_ptr(), len: out.len(), _borrow: PhantomData }
    }

    /// The elements `start..start + len`, bounds-checked.
    ///
    /// # Safety
    /// No two slices alive at the same time (on any thread) may overlap.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start <= self.len && len <= self.len - start, "SharedOut range out of bounds");
        // SAFETY: the range is inside the borrowed slice (checked above) and the caller
        // guarantees no other live slice overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }

    /// Writes element `i`, bounds-checked.
    ///
    /// # Safety
    /// No other thread reads or writes element `i`, and no live slice from
    /// [`SharedOut::slice`] covers it.
    pub(super) unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len, "SharedOut index out of bounds");
        // SAFETY: in bounds (checked above); the caller guarantees exclusive access.
        unsafe { self.ptr.add(i).write(v) }
    }
}
