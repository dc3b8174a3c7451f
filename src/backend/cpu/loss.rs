//! Binary cross-entropy with logits, in the numerically stable form PyTorch uses.
//!
//! Per element of class c, with p = pos_weight[c] and w = class_weight[c] (1 when absent) and
//! l = 1 + (p - 1) * t:
//!   loss = w * ((1 - t) * x + l * (log(1 + exp(-|x|)) + max(-x, 0)))
//! which never evaluates exp of a large positive number. Its derivative is
//!   dloss/dx = w * ((1 - t) - l * sigmoid(-x)).

/// Optional per-class weights (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Weights<'a> {
    pub pos: Option<&'a [f32]>,
    pub class: Option<&'a [f32]>,
}

impl Weights<'_> {
    /// (p, w) for class c.
    #[inline]
    fn of(&self, c: usize) -> (f32, f32) {
        (self.pos.map_or(1.0, |p| p[c]), self.class.map_or(1.0, |w| w[c]))
    }
}

/// Mean loss over all rows x classes, accumulated in f64.
pub fn bce_with_logits(x: &[f32], t: &[f32], weights: Weights<'_>, classes: usize) -> f32 {
    let mut total = 0.0f64;
    for (i, (&x, &t)) in x.iter().zip(t).enumerate() {
        let (p, w) = weights.of(i % classes);
        let l = 1.0 + (p - 1.0) * t;
        let softplus_neg = (-x.abs()).exp().ln_1p() + (-x).max(0.0);
        total += (w * ((1.0 - t) * x + l * softplus_neg)) as f64;
    }
    (total / x.len() as f64) as f32
}

/// Gradient of the mean loss w.r.t. the logits, times `scale`.
pub fn bce_with_logits_backward(x: &[f32], t: &[f32], weights: Weights<'_>, classes: usize, scale: f32) -> Vec<f32> {
    let k = f64::from(scale) / x.len() as f64;
    x.iter()
        .zip(t)
        .enumerate()
        .map(|(i, (&x, &t))| {
            // In f64: (1 - t) and l * sigmoid(-x) are O(1) and nearly cancel where the model is
            // almost right, so f32 would lose most of the small result's digits. A loss has only
            // batch x classes elements, so the wider type costs nothing measurable.
            let (p, w) = weights.of(i % classes);
            let (x, t, p, w) = (f64::from(x), f64::from(t), f64::from(p), f64::from(w));
            let l = 1.0 + (p - 1.0) * t;
            (k * w * ((1.0 - t) - l / (1.0 + x.exp()))) as f32
        })
        .collect()
}
