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
pub mod concat;
pub mod conv;
pub mod ctx;
pub mod elementwise;
#[cfg(feature = "cuda-emu")]
pub mod emu;
pub mod exec;
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
