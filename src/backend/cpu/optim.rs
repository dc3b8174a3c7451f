//! Optimizer updates on the CPU, elementwise over a parameter, exactly as torch.optim defines
//! SGD (with momentum, dampening, Nesterov), Adam and AdamW.

use super::simd::{vectorised, SimdLevel};
use crate::backend::{AdamStep, SgdStep};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `x`, or zero when it is subnormal. Optimizer state decays geometrically wherever a gradient is
/// zero (a dead ReLU unit's weights): Adam's first moment reaches the subnormal range after about
/// 800 steps and then sticks there (0.9 times the smallest subnormal rounds back to it), and every
/// arithmetic operation on a subnormal costs a microcode assist of a hundred cycles or more. A
/// fifth of an MLP's first layer in that state made the whole update six times slower. Flushing
/// changes the state by less than 1.2e-38, far below what any update can resolve.
#[inline(always)]
pub(crate) fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

/// Sum of squares in f64.
pub fn sum_squares(x: &[f32]) -> f64 {
    // Collected in chunk order and summed sequentially: deterministic whatever the pool does.
    let partials: Vec<f64> = x.par_chunks(CHUNK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum()).collect();
    partials.iter().sum()
}

/// torch.optim.SGD: g = grad + wd p; buf = momentum buf + (1 - dampening) g (buf = g on the first
/// step); g = g + momentum buf (Nesterov) or buf; p -= lr g. An empty `buf` marks the first step.
pub fn sgd_step(p: &mut [f32], grad: &[f32], buf: &mut Vec<f32>, h: &SgdStep) {
    let first = buf.is_empty();
    if h.momentum != 0.0 && first {
        buf.resize(p.len(), 0.0);
    }
    let update = |p: &mut f32, g: f32, b: Option<&mut f32>| {
        let mut g = g + h.weight_decay * *p;
        if let Some(b) = b {
            *b = flush_subnormal(if first { g } else { h.momentum * *b + (1.0 - h.dampening) * g });
            g = if h.nesterov { g + h.momentum * *b } else { *b };
        }
        *p -= h.lr * g;
    };
    if h.momentum == 0.0 {
        p.par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .for_each(|(p, g)| p.iter_mut().zip(g).for_each(|(p, &g)| update(p, g, None)));
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(buf.par_chunks_mut(CHUNK))
            .for_each(|((p, g), b)| p.iter_mut().zip(g).zip(b).for_each(|((p, &g), b)| update(p, g, Some(b))));
    }
}

/// torch.optim.Adam / AdamW (amsgrad off). Bias corrections as torch computes them:
/// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
pub fn adam_step(p: &mut [f32], grad: &[f32], m: &mut Vec<f32>, v: &mut Vec<f32>, h: &AdamStep) {
    if m.is_empty() {
        m.resize(p.len(), 0.0);
        v.resize(p.len(), 0.0);
    }
    let t = h.step as i32;
    let bias1 = 1.0 - (h.beta1 as f64).powi(t);
    let bias2_sqrt = (1.0 - (h.beta2 as f64).powi(t)).sqrt();
    let step_size = (h.lr as f64 / bias1) as f32;
    let bias2_sqrt = bias2_sqrt as f32;
    let decay = 1.0 - h.lr * h.weight_decay;
    let update = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
        let g = if h.decoupled {
            *p *= decay;
            g
        } else {
            g + h.weight_decay * *p
        };
        *m = flush_subnormal(h.beta1 * *m + (1.0 - h.beta1) * g);
        *v = flush_subnormal(h.beta2 * *v + (1.0 - h.beta2) * g * g);
        *p -= step_size * *m / (v.sqrt() / bias2_sqrt + h.eps);
    };
    let level = SimdLevel::current();
    p.par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            // The square root and division bound this loop; baseline x86-64 does four lanes.
            vectorised(
                level,
                #[inline(always)]
                || {
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        update(p, g, m, v);
                    }
                },
            )
        });
}
