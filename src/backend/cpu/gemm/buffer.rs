//! The packing buffer: 64-byte aligned (one cache line, one zmm register) and reused across
//! calls so the hot path does not allocate once it has grown to the working size.

use std::cell::Cell;
use std::thread::LocalKey;

/// One cache line of floats; a `Vec<Line>` is a float buffer aligned to 64 bytes.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

const LINE: usize = 16;

thread_local! {
    // Each thread's spare buffers, one per use. A buffer is taken out of its slot for as long as
    // it is used rather than borrowed: while a caller waits inside rayon it may run another task
    // that calls `sgemm` on this same thread, and that nested call must find the slot empty (and
    // allocate) instead of panicking.
    static SHARED: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static TILE: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static CALL: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// What a buffer is for; each has its own per-thread slot, because a thread holding the shared
/// operand of one call also computes tiles, each needing a buffer of its own.
#[derive(Clone, Copy)]
pub(super) enum Slot {
    /// One whole operand, packed for the call and read by every tile.
    Shared,
    /// One k block of the other operand, for the tile a thread is computing.
    Tile,
    /// An operand packed by a caller for the products of one call ([`super::pack_a_for_call`]).
    Call,
}

impl Slot {
    fn key(self) -> &'static LocalKey<Cell<Vec<Line>>> {
        match self {
            Slot::Shared => &SHARED,
            Slot::Tile => &TILE,
            Slot::Call => &CALL,
        }
    }
}

/// A packing buffer on loan from a thread's slot; returned to it on drop.
pub(super) struct PackBuf {
    lines: Vec<Line>,
    len: usize,
    slot: Slot,
}

impl PackBuf {
    /// A buffer of at least `len` floats, reusing this thread's spare one when it is big enough.
    /// Contents are unspecified (whatever an earlier call left); packing overwrites all of it.
    pub(super) fn take(slot: Slot, len: usize) -> PackBuf {
        let mut lines = slot.key().with(Cell::take);
        let needed = len.div_ceil(LINE);
        if lines.len() < needed {
            // Drop the old buffer first: growing in place would copy stale data for nothing.
            drop(lines);
            lines = vec![Line([0.0; LINE]); needed];
        }
        PackBuf { lines, len, slot }
    }

    /// The first `len` floats, 64-byte aligned.
    pub(super) fn as_slice(&self) -> &[f32] {
        // SAFETY: as in `as_mut_slice`; the shared borrow of `self` keeps the memory unaliased
        // by writers while the slice lives.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }

    /// The first `len` floats, 64-byte aligned.
    pub(super) fn as_mut_slice(&mut self) -> &mut [f32] {
        let ptr = self.lines.as_mut_ptr().cast::<f32>();
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]`, 64 bytes with no padding, so the
        // vector's memory is `lines.len() * 16` initialised, contiguous f32s, and `take`
        // guarantees `len <= lines.len() * 16`. The returned slice borrows `self` mutably, so
        // nothing else can reach the memory while it lives.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.len) }
    }
}

impl Drop for PackBuf {
    fn drop(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        // Keep the larger of this buffer and whatever a nested call left in the slot meanwhile.
        // `try_with` because a buffer dropped during thread teardown has nowhere to go.
        let _ = self.slot.key().try_with(|spare| {
            let other = spare.take();
            spare.set(if other.len() > lines.len() { other } else { lines });
        });
    }
}
