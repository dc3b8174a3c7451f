//! The CUDA backend: hand-written kernels (kernels/*.cu) launched through one set of wrappers on
//! either executor, the GPU ([`gpu`], cudarc with dynamic loading, NVRTC at first use) or the CPU
//! emulation of the same sources ([`emu`], feature `cuda-emu`).
//!
//! Layering, bottom up: [`exec`] (memory and launches by kernel name), [`launch`] (every grid and
//! block size, validated), [`ctx`] (allocation and device checks), one wrapper file per kernel
//! file (`matmul`, `conv`, `norm`, `pool`, `elementwise`, `concat`, `loss`, `optim`, `reduce`,
//! `gradcam`), and [`backend`], the `Backend` trait over them.

pub mod alloc;
pub mod backend;
pub mod compile;
pub mod concat;
pub mod conv;
pub mod ctx;
pub mod elementwise;
#[cfg(feature = "cuda-emu")]
pub mod emu;
pub mod exec;
pub mod gpu;
pub mod gradcam;
pub mod kernels;
pub mod launch;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;

pub use backend::CudaBackend;
pub use exec::DeviceStorage;

use crate::backend::{Device, Storage};
use crate::error::{Error, Result};

/// The CUDA backend serving `device`, or an error for a non-CUDA device.
pub fn backend_for(device: Device) -> Result<&'static CudaBackend> {
    match device {
        Device::Cuda(n) => gpu::backend(n),
        #[cfg(feature = "cuda-emu")]
        Device::CudaEmu => Ok(emu::backend()),
        Device::Cpu => Err(Error::Device("cpu has no CUDA backend".into())),
    }
}

/// The Grad-CAM map on a CUDA device: relu(sum_c mean_p(grad) * act) per image, [N, plane].
pub fn gradcam_on(
    device: Device,
    act: &Storage,
    grad: &Storage,
    batch: usize,
    channels: usize,
    plane: usize,
) -> Result<Storage> {
    let b = backend_for(device)?;
    let ctx = b.ctx();
    let cam = gradcam::weighting(ctx, ctx.dev("gradcam", act)?, ctx.dev("gradcam", grad)?, batch, channels, plane)?;
    Ok(Storage::Cuda(cam))
}
