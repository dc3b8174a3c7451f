//! The CPU emulation executor (feature `cuda-emu`): the kernels of kernels/*.cu compiled by g++
//! with cuda_emu.h (build.rs), host memory standing in for device memory. Launches go through
//! the same launch configurations and argument packing as the GPU, so a test here checks the
//! code a GPU runs, minus the hardware.

use super::alloc::{size_class, Cache};
use super::exec::{Arg, Buffer, Executor, PackedArgs};
use super::launch::LaunchConfig;
use crate::backend::Device;
use crate::error::{Error, Result};
use std::alloc::Layout;
use std::ffi::{c_char, c_int, c_uint, c_void, CString};

extern "C" {
    fn cxr_emu_launch(name: *const c_char, grid: *const c_uint, block: *const c_uint, args: *mut *mut c_void) -> c_int;
    fn cxr_emu_use_fibers(on: c_int);
}

/// cudaMalloc's alignment, so kernels may read f64 scratch and vector types as on a GPU.
const ALIGN: usize = 256;

/// The emulated device.
#[derive(Debug, Default)]
pub struct EmuExecutor {
    cache: Cache,
}

static EMU: std::sync::OnceLock<EmuExecutor> = std::sync::OnceLock::new();

/// The process-wide emulated device.
pub fn executor() -> &'static EmuExecutor {
    EMU.get_or_init(EmuExecutor::default)
}

/// Chooses how emulated CUDA threads run: fibers on one OS thread (fast; for whole-model tests)
/// or one OS thread each (real concurrency; what the sanitizers need). Threads by default.
pub fn use_fibers(on: bool) {
    // SAFETY: takes the emulator's launch mutex, so no launch is running while the mode changes.
    unsafe { cxr_emu_use_fibers(on as c_int) }
}

fn layout(bytes: usize) -> Result<Layout> {
    Layout::from_size_align(bytes, ALIGN)
        .map_err(|e| Error::Device(format!("cuda-emu: cannot allocate {bytes} bytes: {e}")))
}

impl Executor for EmuExecutor {
    fn device(&self) -> Device {
        Device::CudaEmu
    }
    fn alloc(&'static self, op: &'static str, bytes: usize) -> Result<Buffer> {
        if bytes == 0 {
            return Ok(Buffer::new(0, 0, self));
        }
        let class = size_class(bytes);
        if let Some(ptr) = self.cache.take(class) {
            return Ok(Buffer::new(ptr, class, self));
        }
        // SAFETY: the layout has a non-zero size (bytes > 0).
        let ptr = unsafe { std::alloc::alloc(layout(class)?) };
        if ptr.is_null() {
            return Err(Error::Device(format!("{op}: out of (emulated) device memory allocating {bytes} bytes")));
        }
        Ok(Buffer::new(ptr as u64, class, self))
    }
    fn release(&self, ptr: u64, bytes: usize) {
        self.cache.put(bytes, ptr);
    }
    fn upload(&self, dst: &Buffer, src: &[f32]) -> Result<()> {
        if src.len() * 4 > dst.bytes() {
            return Err(Error::Device(format!("upload of {} values into a {}-byte buffer", src.len(), dst.bytes())));
        }
        if !src.is_empty() {
            // SAFETY: dst is a live allocation of at least src.len() * 4 bytes (checked above),
            // distinct from the host slice.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.ptr() as *mut f32, src.len()) };
        }
        Ok(())
    }
    fn download(&self, src: &Buffer, byte_offset: usize, dst: &mut [u8]) -> Result<()> {
        if byte_offset + dst.len() > src.bytes() {
            return Err(Error::Device(format!("download of {} bytes past a {}-byte buffer", dst.len(), src.bytes())));
        }
        if !dst.is_empty() {
            // SAFETY: the range lies inside the live allocation (checked above); launches are
            // synchronous here, so no kernel is writing it.
            unsafe {
                std::ptr::copy_nonoverlapping((src.ptr() as *const u8).add(byte_offset), dst.as_mut_ptr(), dst.len())
            };
        }
        Ok(())
    }
    fn launch(&self, kernel: &'static str, cfg: &LaunchConfig, args: &[Arg]) -> Result<()> {
        let name = CString::new(kernel).map_err(|_| Error::Device(format!("bad kernel name {kernel:?}")))?;
        let mut packed = PackedArgs::new(args);
        let mut pointers = packed.pointers();
        // SAFETY: the kernel reads one value per pointer, of the type its signature declares;
        // the wrappers pass exactly that list (checked against the sources by the tests), and
        // every device pointer was validated against its buffer's length by the wrapper.
        let code =
            unsafe { cxr_emu_launch(name.as_ptr(), cfg.grid.as_ptr(), cfg.block.as_ptr(), pointers.as_mut_ptr()) };
        match code {
            0 => Ok(()),
            2 => Err(Error::Device(format!("cuda-emu: no kernel named {kernel}"))),
            _ => Err(Error::Device(format!("cuda-emu: {kernel}: invalid launch {cfg:?}"))),
        }
    }
}

/// The backend computing on the emulated device.
pub fn backend() -> &'static super::CudaBackend {
    static BACKEND: std::sync::OnceLock<super::CudaBackend> = std::sync::OnceLock::new();
    BACKEND.get_or_init(|| super::CudaBackend::new(executor()))
}
