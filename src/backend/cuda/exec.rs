//! What a CUDA-like device must offer the backend: raw memory, copies and kernel launches by name.
//! Two executors implement it: the GPU (cudarc, [`super::gpu`]) and the CPU emulation of the same
//! kernels ([`super::emu`], feature `cuda-emu`). Everything above this trait (launch
//! configurations, the op wrappers, the `Backend` impl) is shared, so the emulated tests exercise
//! the exact code a GPU run uses.

use super::launch::LaunchConfig;
use crate::backend::Device;
use crate::error::Result;
use std::ffi::c_void;
use std::sync::Arc;

/// One kernel parameter, packed as cuLaunchKernel expects: a pointer to each value.
#[derive(Debug, Clone)]
pub enum Arg {
    /// A device address.
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
    /// A struct of `int` fields passed by value (conv and pool geometry).
    Ints(Vec<i32>),
}

/// A device that runs this folder's kernels.
pub trait Executor: Send + Sync + std::fmt::Debug + 'static {
    /// The device this executor computes on.
    fn device(&self) -> Device;
    /// `bytes` of device memory (through the caching allocator); `op` names the caller for the
    /// out-of-memory error.
    fn alloc(&'static self, op: &'static str, bytes: usize) -> Result<Buffer>;
    /// Returns memory to the allocator's cache (called by [`Buffer`]'s drop).
    fn release(&self, ptr: u64, bytes: usize);
    /// Host -> device.
    fn upload(&self, dst: &Buffer, src: &[f32]) -> Result<()>;
    /// Device -> host (waits for every launched kernel first).
    fn download(&self, src: &Buffer, byte_offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Launches `kernel` (an `extern "C"` name in kernels/*.cu) with a computed configuration.
    fn launch(&self, kernel: &'static str, cfg: &LaunchConfig, args: &[Arg]) -> Result<()>;
}

/// A block of device memory, returned to its executor's cache when dropped.
pub struct Buffer {
    ptr: u64,
    bytes: usize,
    exec: &'static dyn Executor,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer {{ ptr: {:#x}, bytes: {}, device: {} }}", self.ptr, self.bytes, self.exec.device())
    }
}

impl Buffer {
    /// Wraps memory the executor allocated (null and 0 bytes for an empty buffer).
    pub(crate) fn new(ptr: u64, bytes: usize, exec: &'static dyn Executor) -> Buffer {
        Buffer { ptr, bytes, exec }
    }
    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.exec.release(self.ptr, self.bytes);
        }
    }
}

/// f32 data in device memory: the payload of [`crate::backend::Storage::Cuda`]. Cloning shares
/// the buffer; in-place ops copy first when it is shared (copy on write), so a clone never sees
/// another's update.
#[derive(Debug, Clone)]
pub struct DeviceStorage {
    pub(crate) buf: Arc<Buffer>,
    pub(crate) len: usize,
}

impl DeviceStorage {
    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device holding the data.
    pub fn device(&self) -> Device {
        self.buf.exec.device()
    }
    /// Address of element `index`.
    pub(crate) fn ptr_at(&self, index: usize) -> u64 {
        self.buf.ptr + 4 * index as u64
    }
    /// The kernel argument for the whole buffer.
    pub(crate) fn arg(&self) -> Arg {
        Arg::Ptr(self.buf.ptr)
    }
}

/// Packs kernel parameters as cuLaunchKernel takes them: one pointer per parameter, each to an
/// 8-byte-aligned slot (or the int array of a struct argument).
pub struct PackedArgs {
    slots: Vec<u64>,
    structs: Vec<Vec<i32>>,
    order: Vec<(bool, usize)>,
}

impl PackedArgs {
    /// Lays out `args`.
    pub fn new(args: &[Arg]) -> PackedArgs {
        let mut p = PackedArgs { slots: Vec::new(), structs: Vec::new(), order: Vec::new() };
        for a in args {
            let slot = match a {
                Arg::Ptr(v) => *v,
                Arg::I32(v) => *v as u32 as u64,
                Arg::U32(v) => *v as u64,
                Arg::F32(v) => v.to_bits() as u64,
                Arg::Ints(v) => {
                    p.order.push((true, p.structs.len()));
                    p.structs.push(v.clone());
                    continue;
                }
            };
            p.order.push((false, p.slots.len()));
            p.slots.push(slot);
        }
        p
    }
    /// The pointer array; valid while `self` is neither moved nor changed.
    pub fn pointers(&mut self) -> Vec<*mut c_void> {
        // Little-endian: a 4-byte parameter read through the slot pointer sees the low half.
        let (slots, structs) = (&mut self.slots, &mut self.structs);
        self.order
            .iter()
            .map(
                |&(is_struct, i)| {
                    if is_struct {
                        structs[i].as_mut_ptr().cast()
                    } else {
                        (&mut slots[i] as *mut u64).cast()
                    }
                },
            )
            .collect()
    }
}
