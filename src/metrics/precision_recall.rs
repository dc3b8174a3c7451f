//! Average precision exactly as scikit-learn's `average_precision_score`: the step-wise sum
//! `AP = sum_k (R_k - R_{k-1}) P_k` over the distinct scores, descending, with no interpolation
//! (the trapezoidal area under the precision-recall curve is optimistic, which is why sklearn
//! does not use it).

use super::roc::binary_clf_curve;

/// Average precision of `scores` against binary `labels` (> 0.5 is positive). None when the
/// lengths differ, a score is NaN, or there is no positive (recall is undefined). With positives
/// only it is 1.
pub fn average_precision(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let (tps, fps, _) = binary_clf_curve(scores, labels);
    let positives = *tps.last()?;
    if positives == 0.0 {
        return None;
    }
    let (mut ap, mut previous_recall) = (0.0, 0.0);
    for (&tp, &fp) in tps.iter().zip(&fps) {
        let recall = tp / positives;
        ap += (recall - previous_recall) * tp / (tp + fp);
        previous_recall = recall;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // sklearn: average_precision_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.8333...
        // (recall .5 at precision 1, then recall 1 at precision 2/3).
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]).unwrap();
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-15, "{ap}");
        assert_eq!(average_precision(&[0.1, 0.2], &[0.0, 0.0]), None);
        assert_eq!(average_precision(&[0.1, 0.2], &[1.0, 1.0]), Some(1.0));
    }
}
