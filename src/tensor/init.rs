//! Seeded random tensors and the weight initialisations torchvision uses.
//!
//! The generator is SplitMix64 (fast, seedable, stateless enough to reproduce a run); normals come
//! from the Box-Muller transform. Results are reproducible for a seed, not equal to PyTorch's
//! generator: golden tests fill weights from a formula instead.

use super::{Shape, Tensor};
use crate::backend::Device;
use crate::error::{Error, Result};

thread_local! {
    static SKIP_RANDOM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Restores random initialisation on this thread when dropped.
#[must_use = "random initialisation resumes when the guard is dropped"]
pub struct SkipRandomInit {
    previous: bool,
}

impl Drop for SkipRandomInit {
    fn drop(&mut self) {
        SKIP_RANDOM.with(|s| s.set(self.previous));
    }
}

/// Until the guard drops, the random constructors on this thread ([`Tensor::rand_uniform`],
/// [`Tensor::rand_normal`] and the inits built on them) return zeros. For building a model whose
/// every tensor a strict load is about to replace: drawing 11 M normals for ResNet18 costs about
/// as much as a forward pass, which a one-shot `tools predict` pays on every run.
pub fn skip_random_init() -> SkipRandomInit {
    SkipRandomInit { previous: SKIP_RANDOM.with(|s| s.replace(true)) }
}

/// True while a [`skip_random_init`] guard is alive on this thread.
pub(crate) fn skipping_random_init() -> bool {
    SKIP_RANDOM.with(|s| s.get())
}

/// A small seedable random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed ^ 0x5DEE_CE66_D1CE_4E5B }
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1], so ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Which fan Kaiming initialisation scales by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    FanIn,
    FanOut,
}

/// (fan_in, fan_out) of a weight shaped [out, in, ...] as PyTorch computes them.
pub fn fans(shape: &Shape) -> Result<(usize, usize)> {
    let d = shape.dims();
    if d.len() < 2 {
        return Err(Error::InvalidArgument { op: "fans", detail: format!("weight shape {d:?} needs 2+ dims") });
    }
    let receptive: usize = d[2..].iter().product();
    Ok((d[1] * receptive, d[0] * receptive))
}

impl Tensor {
    /// Uniform in [low, high).
    pub fn rand_uniform(shape: impl Into<Shape>, low: f32, high: f32, seed: u64, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        if skipping_random_init() {
            return Tensor::zeros(shape, device);
        }
        let mut rng = Rng::new(seed);
        let span = (high - low) as f64;
        let data = (0..shape.numel()).map(|_| (low as f64 + span * rng.uniform()) as f32).collect();
        Tensor::from_vec_on(data, shape, device)
    }

    /// Normal with the given mean and standard deviation.
    pub fn rand_normal(shape: impl Into<Shape>, mean: f32, std: f32, seed: u64, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        if skipping_random_init() {
            return Tensor::zeros(shape, device);
        }
        let mut rng = Rng::new(seed);
        let data = (0..shape.numel()).map(|_| (mean as f64 + std as f64 * rng.normal()) as f32).collect();
        Tensor::from_vec_on(data, shape, device)
    }

    /// Kaiming (He) normal for a ReLU network: std = sqrt(2 / fan). torchvision's ResNet uses
    /// `FanOut` for convolutions; DenseNet uses `FanIn`.
    pub fn kaiming_normal(shape: impl Into<Shape>, mode: FanMode, seed: u64, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        let (fan_in, fan_out) = fans(&shape)?;
        let fan = if mode == FanMode::FanIn { fan_in } else { fan_out };
        let std = (2.0 / fan.max(1) as f32).sqrt();
        Tensor::rand_normal(shape, 0.0, std, seed, device)
    }

    /// PyTorch's default Linear/Conv weight init, kaiming_uniform(a = sqrt(5)):
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)). The same bound is PyTorch's default bias init.
    pub fn torch_default_uniform(shape: impl Into<Shape>, fan_in: usize, seed: u64, device: Device) -> Result<Tensor> {
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        Tensor::rand_uniform(shape, -bound, bound, seed, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_variance() {
        let t = Tensor::rand_normal([20_000], 0.0, 1.0, 3, Device::Cpu).unwrap().to_vec().unwrap();
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / t.len() as f64;
        let var = t.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / t.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }

    #[test]
    fn kaiming_fan_out_std() {
        let t = Tensor::kaiming_normal([64, 32, 3, 3], FanMode::FanOut, 1, Device::Cpu).unwrap();
        let v = t.to_vec().unwrap();
        let std = (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        let want = (2.0f64 / (64.0 * 9.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.05, "std {std} want {want}");
    }

    #[test]
    fn same_seed_same_tensor() {
        let a = Tensor::rand_uniform([100], -1.0, 1.0, 9, Device::Cpu).unwrap().to_vec().unwrap();
        let b = Tensor::rand_uniform([100], -1.0, 1.0, 9, Device::Cpu).unwrap().to_vec().unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
