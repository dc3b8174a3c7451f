//! ROC curves exactly as scikit-learn's `roc_curve` computes them, and the Youden J threshold.
//!
//! A point is added at every distinct score (descending), predicting positive when
//! `score >= threshold`; the curve starts at (0, 0) with threshold +inf, as sklearn >= 1.3 does.
//! With `drop_intermediate` the collinear points sklearn drops by default are dropped too; the
//! Youden point is the same either way (the first point of a collinear run is always kept, and
//! J = tpr - fpr never peaks strictly inside one), so [`youden`] works on either curve.

use serde::{Deserialize, Serialize};

/// One class's ROC curve: parallel vectors, thresholds descending (the first is +inf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    /// The score at or above which each point predicts positive. The first is +inf (written as
    /// `null` in JSON, which has no infinity).
    #[serde(with = "infinite_as_null::vec")]
    pub thresholds: Vec<f64>,
}

/// Cumulative true and false positives at each distinct score, scores descending: sklearn's
/// `_binary_clf_curve`. Returns (tps, fps, thresholds).
pub(crate) fn binary_clf_curve(scores: &[f32], labels: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tps, mut fps, mut thresholds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] > 0.5 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        // A point closes each run of equal scores: tied images move the curve together.
        let last_of_run = order.get(k + 1).is_none_or(|&next| scores[next] != scores[i]);
        if last_of_run {
            tps.push(tp);
            fps.push(fp);
            thresholds.push(scores[i] as f64);
        }
    }
    (tps, fps, thresholds)
}

/// Indices sklearn keeps with `drop_intermediate=True`: the ends, and every point where the
/// second difference of fps or tps is non-zero (a corner).
fn corner_indices(tps: &[f64], fps: &[f64]) -> Vec<usize> {
    let n = tps.len();
    (0..n)
        .filter(|&i| {
            i == 0 || i + 1 == n || {
                let d2 = |v: &[f64]| v[i + 1] - 2.0 * v[i] + v[i - 1];
                d2(fps) != 0.0 || d2(tps) != 0.0
            }
        })
        .collect()
}

/// The ROC curve of `scores` against binary `labels` (> 0.5 is positive). None when the
/// lengths differ, a score is NaN, or only one class is present (the rates are undefined).
pub fn roc_curve(scores: &[f32], labels: &[f32], drop_intermediate: bool) -> Option<RocCurve> {
    if scores.len() != labels.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let (mut tps, mut fps, mut thresholds) = binary_clf_curve(scores, labels);
    if drop_intermediate && tps.len() > 2 {
        let keep = corner_indices(&tps, &fps);
        let pick = |v: &[f64]| keep.iter().map(|&i| v[i]).collect::<Vec<f64>>();
        (tps, fps, thresholds) = (pick(&tps), pick(&fps), pick(&thresholds));
    }
    let (p, n) = (*tps.last()?, *fps.last()?);
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let with_origin = |v: &[f64], total: f64| std::iter::once(0.0).chain(v.iter().map(|x| x / total)).collect();
    thresholds.insert(0, f64::INFINITY);
    Some(RocCurve { fpr: with_origin(&fps, n), tpr: with_origin(&tps, p), thresholds })
}

/// The point of a ROC curve that maximises Youden's J = sensitivity + specificity - 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct YoudenPoint {
    /// Index into the curve.
    pub index: usize,
    /// Predict positive when `score >= threshold`. +inf (`null` in JSON) when no threshold beats
    /// chance (every J <= 0), as `thresholds[argmax]` gives in sklearn.
    #[serde(with = "infinite_as_null")]
    pub threshold: f64,
    pub tpr: f64,
    pub fpr: f64,
    pub j: f64,
}

/// Youden's point: `argmax(tpr - fpr)`, the first maximum on ties (numpy's argmax).
pub fn youden(curve: &RocCurve) -> YoudenPoint {
    let mut best = 0;
    for i in 1..curve.tpr.len() {
        if curve.tpr[i] - curve.fpr[i] > curve.tpr[best] - curve.fpr[best] {
            best = i;
        }
    }
    YoudenPoint {
        index: best,
        threshold: curve.thresholds[best],
        tpr: curve.tpr[best],
        fpr: curve.fpr[best],
        j: curve.tpr[best] - curve.fpr[best],
    }
}

/// Serde for thresholds: JSON has no infinity, so +inf is written as `null` and read back.
mod infinite_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match v.is_finite() {
            true => s.serialize_f64(*v),
            false => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }

    pub mod vec {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
            v.iter().map(|x| x.is_finite().then_some(*x)).collect::<Vec<_>>().serialize(s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
            Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|x| x.unwrap_or(f64::INFINITY)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_curve_by_hand() {
        // sklearn: roc_curve([0,0,1,1], [0.1,0.4,0.35,0.8], drop_intermediate=False)
        // fpr [0, 0, .5, .5, 1], tpr [0, .5, .5, 1, 1], thresholds [inf, .8, .4, .35, .1]
        let c = roc_curve(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0], false).unwrap();
        assert_eq!(c.fpr, vec![0.0, 0.0, 0.5, 0.5, 1.0]);
        assert_eq!(c.tpr, vec![0.0, 0.5, 0.5, 1.0, 1.0]);
        assert_eq!(c.thresholds[1..], [0.8f32 as f64, 0.4f32 as f64, 0.35f32 as f64, 0.1f32 as f64]);
        let y = youden(&c);
        assert_eq!((y.index, y.j), (1, 0.5));
        assert!(roc_curve(&[0.1, 0.2], &[1.0, 1.0], false).is_none());
    }
}
