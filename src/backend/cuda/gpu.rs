//! The GPU executor: cudarc's driver API loaded at run time. Every driver call is guarded by a
//! presence check first (cudarc panics when libcuda is absent), so a machine without a driver,
//! without NVRTC or without a GPU gets an error that says which, never a panic.
//!
//! One primary context per device, the legacy default stream (launches queue without host
//! synchronisation; only downloads wait), kernels compiled per file at first use for the
//! device's own architecture (see [`super::compile`]), memory through the caching allocator.

use super::alloc::{size_class, Cache};
use super::compile;
use super::exec::{Arg, Buffer, Executor, PackedArgs};
use super::kernels;
use super::launch::LaunchConfig;
use crate::backend::Device;
use crate::error::{Error, Result};
use cudarc::driver::{result as cu, sys};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// One CUDA device.
pub struct GpuExecutor {
    ordinal: usize,
    ctx: sys::CUcontext,
    arch: u32,
    name: String,
    cache: Cache,
    modules: Mutex<HashMap<&'static str, sys::CUmodule>>,
    functions: Mutex<HashMap<&'static str, sys::CUfunction>>,
}

// SAFETY: the context and module handles are plain driver handles, usable from any thread once
// the context is made current there (every entry point does so); the maps are behind mutexes.
unsafe impl Send for GpuExecutor {}
// SAFETY: as above.
unsafe impl Sync for GpuExecutor {}

impl std::fmt::Debug for GpuExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuExecutor(cuda:{} {} sm_{})", self.ordinal, self.name, self.arch)
    }
}

fn driver_err(what: impl std::fmt::Display, e: cu::DriverError) -> Error {
    Error::Device(format!("{what}: {e:?}"))
}

/// Loads and initialises the driver, or says why it cannot.
pub fn init_driver() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: only probes dlopen for libcuda; no symbol is called.
        if !unsafe { sys::is_culib_present() } {
            return Err(
                "no NVIDIA driver: libcuda.so was not found (install the NVIDIA driver, or JetPack on a Jetson)".into(),
            );
        }
        cu::init().map_err(|e| format!("the NVIDIA driver failed to initialise: {e:?}"))
    })
    .clone()
    .map_err(Error::Device)
}

/// Number of CUDA devices (0 when the driver is absent).
pub fn device_count() -> Result<usize> {
    init_driver()?;
    Ok(cu::device::get_count().map_err(|e| driver_err("cuDeviceGetCount", e))? as usize)
}

/// (name, compute capability, memory in bytes) of device `n`.
pub fn describe(n: usize) -> Result<(String, u32, usize)> {
    init_driver()?;
    let dev = cu::device::get(n as i32).map_err(|e| driver_err(format!("cuda:{n}"), e))?;
    let name = cu::device::get_name(dev).map_err(|e| driver_err("cuDeviceGetName", e))?;
    let attr = |a| {
        // SAFETY: dev came from cuDeviceGet.
        unsafe { cu::device::get_attribute(dev, a) }.map_err(|e| driver_err("cuDeviceGetAttribute", e))
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    // SAFETY: dev came from cuDeviceGet.
    let mem = unsafe { cu::device::total_mem(dev) }.map_err(|e| driver_err("cuDeviceTotalMem", e))?;
    Ok((name, (major * 10 + minor) as u32, mem))
}

impl GpuExecutor {
    fn open(n: usize) -> Result<GpuExecutor> {
        let count = device_count()?;
        if n >= count {
            return Err(Error::Device(match count {
                0 => "the NVIDIA driver is installed but reports no CUDA GPU".to_string(),
                c => format!("cuda:{n} requested, but only {c} CUDA device(s) exist (cuda:0..cuda:{})", c - 1),
            }));
        }
        compile::ensure_nvrtc()?;
        let (name, arch, _) = describe(n)?;
        let dev = cu::device::get(n as i32).map_err(|e| driver_err(format!("cuda:{n}"), e))?;
        // SAFETY: dev is valid; the retained primary context lives as long as the process.
        let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(|e| driver_err("cuDevicePrimaryCtxRetain", e))?;
        Ok(GpuExecutor {
            ordinal: n,
            ctx,
            arch,
            name,
            cache: Cache::default(),
            modules: Mutex::default(),
            functions: Mutex::default(),
        })
    }

    fn make_current(&self) -> Result<()> {
        // SAFETY: ctx is a retained primary context, never released.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| driver_err("cuCtxSetCurrent", e))
    }

    /// The function handle of `kernel`, compiling and loading its file at first use.
    fn function(&self, kernel: &'static str) -> Result<sys::CUfunction> {
        if let Some(f) = self.functions.lock().unwrap_or_else(|e| e.into_inner()).get(kernel) {
            return Ok(*f);
        }
        let file = kernels::file_of(kernel).ok_or_else(|| Error::Device(format!("no kernel named {kernel}")))?;
        let module = self.module(file)?;
        let name = std::ffi::CString::new(kernel).map_err(|_| Error::Device(format!("bad kernel name {kernel}")))?;
        // SAFETY: module was loaded into this (current) context and is never unloaded.
        let f =
            unsafe { cu::module::get_function(module, name) }.map_err(|e| driver_err(format!("kernel {kernel}"), e))?;
        self.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(kernel, f);
        Ok(f)
    }

    fn module(&self, file: &'static str) -> Result<sys::CUmodule> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(file) {
            return Ok(*m);
        }
        let cubin = compile::cubin(file, self.arch)?;
        // SAFETY: cubin is a complete CUBIN image for this device's architecture; the driver
        // copies it during the call.
        let m = unsafe { cu::module::load_data(cubin.as_ptr().cast()) }
            .map_err(|e| driver_err(format!("loading {file} (sm_{})", self.arch), e))?;
        modules.insert(file, m);
        Ok(m)
    }
}

/// The executor of device `n`, opened at first use (errors are returned every time, not cached
/// as a panic).
pub fn executor(n: usize) -> Result<&'static GpuExecutor> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, &'static GpuExecutor>>> = OnceLock::new();
    let mut map = DEVICES.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = map.get(&n) {
        return Ok(e);
    }
    let exec: &'static GpuExecutor = Box::leak(Box::new(GpuExecutor::open(n)?));
    map.insert(n, exec);
    Ok(exec)
}

/// The backend of device `n`.
pub fn backend(n: usize) -> Result<&'static super::CudaBackend> {
    static BACKENDS: OnceLock<Mutex<HashMap<usize, &'static super::CudaBackend>>> = OnceLock::new();
    let mut map = BACKENDS.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = map.get(&n) {
        return Ok(b);
    }
    let b: &'static super::CudaBackend = Box::leak(Box::new(super::CudaBackend::new(executor(n)?)));
    map.insert(n, b);
    Ok(b)
}

impl Executor for GpuExecutor {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }
    fn alloc(&'static self, op: &'static str, bytes: usize) -> Result<Buffer> {
        if bytes == 0 {
            return Ok(Buffer::new(0, 0, self));
        }
        let class = size_class(bytes);
        if let Some(ptr) = self.cache.take(class) {
            return Ok(Buffer::new(ptr, class, self));
        }
        self.make_current()?;
        // SAFETY: a plain allocation in the current context.
        let first = unsafe { cu::malloc_sync(class) };
        let ptr = match first {
            Ok(p) => p,
            Err(_) => {
                // Out of memory with blocks parked in the cache: give them back and retry once.
                for (p, _) in self.cache.drain() {
                    // SAFETY: p came from malloc_sync and is owned by the cache, not by a Buffer.
                    unsafe { cu::free_sync(p) }.ok();
                }
                // SAFETY: as above.
                unsafe { cu::malloc_sync(class) }.map_err(|e| {
                    Error::Device(format!(
                        "{op}: out of device memory on cuda:{} allocating {bytes} bytes ({e:?})",
                        self.ordinal
                    ))
                })?
            }
        };
        Ok(Buffer::new(ptr, class, self))
    }
    fn release(&self, ptr: u64, bytes: usize) {
        self.cache.put(bytes, ptr);
    }
    fn upload(&self, dst: &Buffer, src: &[f32]) -> Result<()> {
        if src.len() * 4 > dst.bytes() {
            return Err(Error::Device(format!("upload of {} values into a {}-byte buffer", src.len(), dst.bytes())));
        }
        if src.is_empty() {
            return Ok(());
        }
        self.make_current()?;
        // SAFETY: dst holds at least src.len() f32 (checked above).
        unsafe { cu::memcpy_htod_sync(dst.ptr(), src) }.map_err(|e| driver_err("copy to device", e))
    }
    fn download(&self, src: &Buffer, byte_offset: usize, dst: &mut [u8]) -> Result<()> {
        if byte_offset + dst.len() > src.bytes() {
            return Err(Error::Device(format!("download of {} bytes past a {}-byte buffer", dst.len(), src.bytes())));
        }
        if dst.is_empty() {
            return Ok(());
        }
        self.make_current()?;
        // SAFETY: the range lies inside src (checked above); the synchronous copy on the legacy
        // default stream waits for every kernel launched before it.
        unsafe { cu::memcpy_dtoh_sync(dst, src.ptr() + byte_offset as u64) }.map_err(|e| driver_err("copy to host", e))
    }
    fn launch(&self, kernel: &'static str, cfg: &LaunchConfig, args: &[Arg]) -> Result<()> {
        self.make_current()?;
        let f = self.function(kernel)?;
        let mut packed = PackedArgs::new(args);
        let mut params = packed.pointers();
        let grid = (cfg.grid[0], cfg.grid[1], cfg.grid[2]);
        let block = (cfg.block[0], cfg.block[1], cfg.block[2]);
        // SAFETY: f is a loaded kernel whose parameter list the wrapper matched (tests check
        // every wrapper against the sources through the emulation); params point at live values
        // for the duration of the call (the driver copies them); the null stream is valid.
        unsafe { cu::launch_kernel(f, grid, block, 0, std::ptr::null_mut(), &mut params) }
            .map_err(|e| driver_err(format!("launching {kernel} {cfg:?}"), e))
    }
}

/// What `tools info --devices` prints: the driver, NVRTC and every CUDA device found, or why
/// none can be used. Never fails: each missing piece is a line of the report.
pub fn device_report() -> Vec<String> {
    let mut lines = Vec::new();
    match device_count() {
        Err(e) => lines.push(format!("cuda: unavailable: {e}")),
        Ok(0) => lines.push("cuda: the NVIDIA driver is installed but reports no CUDA GPU".to_string()),
        Ok(n) => {
            for i in 0..n {
                lines.push(match describe(i) {
                    Ok((name, cc, mem)) => format!(
                        "cuda:{i}: {name}, compute capability {}.{}, {:.1} GiB",
                        cc / 10,
                        cc % 10,
                        mem as f64 / (1u64 << 30) as f64
                    ),
                    Err(e) => format!("cuda:{i}: {e}"),
                });
            }
        }
    }
    lines.push(match compile::nvrtc_version() {
        Ok((major, minor)) => format!(
            "nvrtc: {major}.{minor} (kernels compiled at first use, cached in {})",
            compile::cache_dir().map_or("no cache folder".into(), |d| d.display().to_string())
        ),
        Err(e) => format!("nvrtc: unavailable: {e}"),
    });
    lines
}
