//! Class weights for the loss, computed from the training split's labels only (never from
//! validation or test data).

use super::config::PosWeightMode;
use crate::data::{Dataset, FINDINGS};

/// Per-class loss weights: `pos_weight` (scales positives) and `class_weight` (scales a class's
/// whole loss), plus warnings for classes that cannot be weighted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClassWeights {
    pub pos_weight: Option<Vec<f32>>,
    pub class_weight: Option<Vec<f32>>,
    pub warnings: Vec<String>,
}

/// Positive counts per class and the number of images.
pub fn positive_counts(ds: &dyn Dataset, classes: usize) -> (Vec<usize>, usize) {
    let mut pos = vec![0usize; classes];
    for i in 0..ds.len() {
        for (p, &l) in pos.iter_mut().zip(ds.labels(i)) {
            *p += usize::from(l > 0.5);
        }
    }
    (pos, ds.len())
}

fn class_name(c: usize) -> String {
    FINDINGS.get(c).map_or_else(|| format!("class {c}"), |s| s.to_string())
}

/// The weights `mode` asks for. A class with no positives (or no negatives) in training cannot be
/// weighted: it keeps weight 1 and is named in the warnings.
pub fn class_weights(ds: &dyn Dataset, classes: usize, mode: PosWeightMode) -> ClassWeights {
    if mode == PosWeightMode::None {
        return ClassWeights::default();
    }
    let (pos, n) = positive_counts(ds, classes);
    let mut w = ClassWeights::default();
    let degenerate: Vec<usize> = (0..classes).filter(|&c| pos[c] == 0 || pos[c] == n).collect();
    if !degenerate.is_empty() {
        let names: Vec<String> =
            degenerate.iter().map(|&c| format!("{} ({} of {n} positive)", class_name(c), pos[c])).collect();
        w.warnings.push(format!(
            "no positives or no negatives in the training split for {}: their loss is left unweighted and their AUROC cannot be computed",
            names.join(", ")
        ));
    }
    let ok = |c: usize| pos[c] > 0 && pos[c] < n;
    match mode {
        PosWeightMode::None => {}
        PosWeightMode::Ratio => {
            w.pos_weight =
                Some((0..classes).map(|c| if ok(c) { (n - pos[c]) as f32 / pos[c] as f32 } else { 1.0 }).collect());
        }
        PosWeightMode::Balanced => {
            // Loss = w_pos * y * (-log p) + w_neg * (1 - y) * (-log(1 - p)) with w_pos = freq(neg),
            // w_neg = freq(pos): as BCE, class_weight = w_neg and pos_weight = w_pos / w_neg.
            let (pw, cw): (Vec<f32>, Vec<f32>) = (0..classes)
                .map(|c| {
                    let (w_pos, w_neg) =
                        if ok(c) { ((n - pos[c]) as f32 / n as f32, pos[c] as f32 / n as f32) } else { (1.0, 1.0) };
                    (w_pos / w_neg, w_neg)
                })
                .unzip();
            w.pos_weight = Some(pw);
            w.class_weight = Some(cw);
        }
    }
    w
}
