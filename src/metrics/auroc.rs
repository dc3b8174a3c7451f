//! Area under the ROC curve, computed exactly as the Mann-Whitney U statistic: the probability
//! that a random positive scores above a random negative, ties counting one half. This equals
//! scikit-learn's `roc_auc_score` (trapezoidal area under the full ROC curve) on the same input.

/// AUROC of `scores` against binary `labels` (> 0.5 is positive), or None when only one class is
/// present (the AUROC is undefined) or a score is NaN.
pub fn auroc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (tie-averaged, 1-based) ranks of the positives.
    let (mut rank_sum, mut positives) = (0.0f64, 0usize);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] > 0.5 {
                rank_sum += average_rank;
                positives += 1;
            }
        }
        i = j + 1;
    }
    let negatives = scores.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Per-class AUROC of a row-major [rows x classes] score matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassAuroc {
    /// One entry per class; None where the class has only positives or only negatives.
    pub per_class: Vec<Option<f64>>,
}

impl ClassAuroc {
    /// Mean over the classes where the AUROC is defined, or None if none is.
    pub fn mean(&self) -> Option<f64> {
        let defined: Vec<f64> = self.per_class.iter().flatten().copied().collect();
        (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
    }
}

/// Per-class AUROCs of `scores` and `labels`, both [rows x classes] row-major.
pub fn mean_auroc(scores: &[f32], labels: &[f32], classes: usize) -> ClassAuroc {
    let rows = scores.len().checked_div(classes).unwrap_or(0);
    let column = |m: &[f32], c: usize| (0..rows).map(|r| m[r * classes + c]).collect::<Vec<f32>>();
    ClassAuroc { per_class: (0..classes).map(|c| auroc(&column(scores, c), &column(labels, c))).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_reversed_and_tied() {
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[0.0, 0.0, 1.0, 1.0]), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[0.0, 0.0, 1.0, 1.0]), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &[0.0, 1.0, 0.0, 1.0]), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.2], &[1.0, 1.0]), None);
    }

    #[test]
    fn matches_sklearn_on_a_tied_example() {
        // sklearn.metrics.roc_auc_score([0,1,1,0,1,0,1], [0.2,0.4,0.4,0.4,0.9,0.1,0.3]) = 0.8333... (10 of 12 pairs)
        let got = auroc(&[0.2, 0.4, 0.4, 0.4, 0.9, 0.1, 0.3], &[0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]).unwrap();
        assert!((got - 0.8333333333333334).abs() < 1e-12, "{got}");
    }

    #[test]
    fn mean_skips_undefined_classes() {
        let scores = [0.1, 0.5, 0.9, 0.5, 0.2, 0.5];
        let labels = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0];
        let a = mean_auroc(&scores, &labels, 2);
        assert_eq!(a.per_class, vec![Some(1.0), None]);
        assert_eq!(a.mean(), Some(1.0));
    }
}
