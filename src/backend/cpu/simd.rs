//! Runtime choice of the SIMD instruction set used by the CPU kernels.
//!
//! The best level the CPU supports is used by default. `CXR_SIMD=portable|avx2|avx512` forces a
//! level (never above what the CPU supports), and tests call kernels with every supported level
//! explicitly so the AVX2 and portable paths are exercised on an AVX-512 machine too.

use std::sync::OnceLock;

/// An instruction-set level a CPU kernel can be compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Plain Rust, auto-vectorised by the compiler; runs on every target (aarch64 included).
    Portable,
    /// x86-64 AVX2 with FMA: 16 ymm registers of 8 floats.
    Avx2,
    /// x86-64 AVX-512F: 32 zmm registers of 16 floats.
    Avx512,
}

impl SimdLevel {
    /// The level in use: the best supported one, or the one `CXR_SIMD` asks for if lower.
    pub fn current() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let best = Self::best_supported();
            match std::env::var("CXR_SIMD").ok().as_deref().and_then(Self::parse) {
                Some(wanted) if wanted <= best => wanted,
                _ => best,
            }
        })
    }

    /// Parses a level name as `CXR_SIMD` spells it.
    pub fn parse(name: &str) -> Option<SimdLevel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" | "none" => Some(SimdLevel::Portable),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" | "avx512f" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// The best level this CPU supports.
    pub fn best_supported() -> SimdLevel {
        *Self::supported().last().unwrap_or(&SimdLevel::Portable)
    }

    /// Every level this CPU supports, lowest first.
    pub fn supported() -> Vec<SimdLevel> {
        let mut levels = vec![SimdLevel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                levels.push(SimdLevel::Avx2);
                if is_x86_feature_detected!("avx512f") {
                    levels.push(SimdLevel::Avx512);
                }
            }
        }
        levels
    }

    /// The name `CXR_SIMD` accepts for this level.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }
}

/// Runs `f` inside a function compiled for `level` (AVX-512F, or AVX2 with FMA), so that the
/// plain loops of an `f` inlined there are vectorised with that level's registers. The CPU
/// backend is otherwise compiled for baseline x86-64 (SSE2), where an f64 reduction runs two
/// lanes at a time and a memory-bound pass becomes compute-bound. Only the instruction
/// selection changes: Rust never contracts a * b + c into an FMA, so results are the same at
/// every level. Mark the closure `#[inline(always)]`; a call `f` is not inlined into stays
/// baseline code (correct, only slower).
#[inline(always)]
pub fn vectorised<R>(level: SimdLevel, f: impl FnOnce() -> R) -> R {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` is at most `best_supported()` (every constructor checks the CPU), so
        // the features `run_avx512` enables are present.
        SimdLevel::Avx512 if is_x86_feature_detected!("avx512f") => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        SimdLevel::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => unsafe {
            run_avx2(f)
        },
        _ => f(),
    }
}

/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
