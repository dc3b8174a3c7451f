//! Shared by the CUDA kernel tests (emulated and on a GPU): paired CPU/device backends, random
//! data, and the per-kernel tolerances.
#![allow(dead_code)]

use cxr::backend::{Backend, Storage};
use cxr::Device;

/// The CPU reference backend and the device under test.
pub struct Pair {
    pub cpu: &'static dyn Backend,
    pub gpu: &'static dyn Backend,
}

impl Default for Pair {
    fn default() -> Pair {
        Pair::new()
    }
}

impl Pair {
    /// CPU vs the device under test.
    pub fn new() -> Pair {
        Pair { cpu: Device::Cpu.backend().unwrap(), gpu: device_under_test().backend().unwrap() }
    }
    /// The same values on both devices.
    pub fn up(&self, v: &[f32]) -> (Storage, Storage) {
        (self.cpu.copy_from_host(v.to_vec()).unwrap(), self.gpu.copy_from_host(v.to_vec()).unwrap())
    }
}

/// The device the tests compare with the CPU: cuda:0 with `gpu-tests`, else the emulation.
pub fn device_under_test() -> Device {
    #[cfg(feature = "gpu-tests")]
    {
        Device::Cuda(0)
    }
    #[cfg(all(feature = "cuda-emu", not(feature = "gpu-tests")))]
    {
        Device::CudaEmu
    }
    #[cfg(not(any(feature = "cuda-emu", feature = "gpu-tests")))]
    {
        Device::Cpu
    }
}

/// `n` values in [-amp, amp) from a 64-bit LCG (cheap, so proptest shrinks over seeds only).
pub fn data(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

/// |got - want| <= abs + rel * |want|, per element.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

impl Tol {
    pub const fn abs(abs: f32) -> Tol {
        Tol { abs, rel: 0.0 }
    }
    /// The allowed difference at magnitude `scale`.
    pub fn bound(&self, scale: f32) -> f32 {
        self.abs + self.rel * scale
    }
}

/// Tolerances per kernel family, the same for the emulation and a GPU.
pub mod tol {
    use super::Tol;
    /// Pure data movement and single IEEE operations (add, mul, relu, copies, dropout masks,
    /// max pool): bitwise equal.
    pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
    /// exp/log1p based kernels: the device's libm may differ by a few ulp.
    pub const TRANSCENDENTAL: Tol = Tol { abs: 1e-6, rel: 4e-6 };
    /// Short f32 sums in another order (pool windows, global pool, gradcam).
    pub const SMALL_SUM: Tol = Tol { abs: 1e-6, rel: 1e-5 };
    /// f64-accumulated reductions: scaled by the sum of |x| at the call site.
    pub const REDUCTION: Tol = Tol { abs: 1e-6, rel: 1e-6 };
    /// Batch norm: f64 statistics on both sides, f32 normalisation (FMA contraction on a GPU).
    pub const NORM: Tol = Tol { abs: 1e-5, rel: 1e-4 };
    /// Optimizer updates: the same f32 formula, FMA contraction allowed.
    pub const OPTIM: Tol = Tol { abs: 1e-6, rel: 1e-5 };
    /// A dot product of length k over values in [-1, 1]: f32 rounding grows with k, and the CPU
    /// GEMM (FMA, blocked k) sums in another order than the tiled kernel.
    pub fn gemm(k: usize) -> Tol {
        Tol { abs: 2e-6 * k as f32, rel: 1e-5 }
    }
}

/// Asserts element-wise closeness with a message naming the kernel and the first bad index.
pub fn assert_close(what: &str, want: &[f32], got: &[f32], t: Tol) {
    assert_eq!(want.len(), got.len(), "{what}: lengths");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        let ok = if t.abs == 0.0 && t.rel == 0.0 {
            w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan())
        } else {
            (w - g).abs() <= t.bound(w.abs())
        };
        assert!(ok, "{what}: element {i} of {}: cpu {w} vs device {g} (tolerance {t:?})", want.len());
    }
}

/// Compares a CPU storage with a device storage.
pub fn check(what: &str, want: &Storage, got: &Storage, t: Tol) {
    let cpu = Device::Cpu.backend().unwrap();
    let dev = got.device().backend().unwrap();
    assert_close(what, &cpu.copy_to_host(want).unwrap(), &dev.copy_to_host(got).unwrap(), t);
}

/// The Grad-CAM weighting on the device under test.
pub fn device_gradcam(act: &[f32], grad: &[f32], batch: usize, channels: usize, plane: usize) -> Vec<f32> {
    let dev = device_under_test().backend().unwrap();
    let (a, g) = (dev.copy_from_host(act.to_vec()).unwrap(), dev.copy_from_host(grad.to_vec()).unwrap());
    let cam = cxr::backend::cuda::gradcam_on(device_under_test(), &a, &g, batch, channels, plane).unwrap();
    dev.copy_to_host(&cam).unwrap()
}
