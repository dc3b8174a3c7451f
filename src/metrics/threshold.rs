//! Metrics of binary decisions at per-class thresholds: confusion counts, precision, recall,
//! F1, specificity, and the multi-label summaries (hamming loss, subset accuracy, label-wise
//! accuracy).
//!
//! An image is predicted positive for a class when `score >= threshold`, the convention of
//! sklearn's `roc_curve`, so a Youden threshold reproduces exactly the ROC point it came from.
//! (The MLP lab's Keras metric uses `>`; the two differ only for a score exactly equal to the
//! threshold.) A ratio whose denominator is zero is 0, as sklearn's `zero_division` default gives.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One class's 2x2 confusion matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Confusion {
    /// Counts `scores >= threshold` against `labels` (> 0.5 is positive).
    pub fn count(scores: &[f32], labels: &[f32], threshold: f64) -> Confusion {
        let mut c = Confusion::default();
        for (&s, &l) in scores.iter().zip(labels) {
            c.add(s, l, threshold);
        }
        c
    }
    /// Adds one decision; returns true when it is wrong.
    fn add(&mut self, score: f32, label: f32, threshold: f64) -> bool {
        match (score as f64 >= threshold, label > 0.5) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
        (score as f64 >= threshold) != (label > 0.5)
    }
    /// Positives in the ground truth (sklearn's `support`).
    pub fn support(&self) -> u64 {
        self.tp + self.fn_
    }
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    /// Recall, also called sensitivity.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }
    /// F1 as sklearn computes it: 2 tp / (2 tp + fp + fn).
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
    /// Fraction of images decided correctly for this class.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn_)
    }
}

/// Decisions of a whole [rows x classes] score matrix at per-class thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdMetrics {
    pub thresholds: Vec<f64>,
    /// One matrix per class.
    pub confusion: Vec<Confusion>,
    /// Fraction of (image, class) decisions that are wrong (sklearn's `hamming_loss`).
    pub hamming_loss: f64,
    /// Fraction of images whose every class is decided correctly (sklearn's `accuracy_score` on
    /// multi-label input).
    pub subset_accuracy: f64,
    /// Fraction of (image, class) decisions that are right: the MLP lab's `multilabel_accuracy`,
    /// which is 1 - hamming loss.
    pub label_wise_accuracy: f64,
}

/// Checks `thresholds` (one per class, each finite) for a `classes`-wide matrix.
fn check_thresholds(thresholds: &[f64], classes: usize) -> Result<()> {
    let bad = |detail: String| Err(Error::InvalidArgument { op: "threshold metrics", detail });
    if thresholds.len() != classes {
        return bad(format!("{} thresholds for {classes} classes", thresholds.len()));
    }
    if let Some(t) = thresholds.iter().find(|t| !t.is_finite()) {
        return bad(format!("threshold {t} is not finite"));
    }
    Ok(())
}

/// Decision metrics of `scores` against `labels` (both row-major [rows x classes]) with
/// `thresholds[c]` for class c. `classes` is explicit so a wrong threshold count is an error
/// rather than a silently different matrix shape.
pub fn threshold_metrics(
    scores: &[f32],
    labels: &[f32],
    classes: usize,
    thresholds: &[f64],
) -> Result<ThresholdMetrics> {
    check_thresholds(thresholds, classes)?;
    if classes == 0 || scores.len() != labels.len() || !scores.len().is_multiple_of(classes) {
        return Err(Error::InvalidArgument {
            op: "threshold metrics",
            detail: format!("{} scores and {} labels for {classes} classes", scores.len(), labels.len()),
        });
    }
    let rows = scores.len() / classes;
    let mut confusion = vec![Confusion::default(); classes];
    let (mut wrong, mut rows_right) = (0u64, 0u64);
    for r in 0..rows {
        let mut row_wrong = 0;
        for (c, &t) in thresholds.iter().enumerate() {
            let k = r * classes + c;
            row_wrong += u64::from(confusion[c].add(scores[k], labels[k], t));
        }
        wrong += row_wrong;
        rows_right += u64::from(row_wrong == 0);
    }
    let decisions = (rows * classes) as u64;
    Ok(ThresholdMetrics {
        thresholds: thresholds.to_vec(),
        confusion,
        hamming_loss: ratio(wrong, decisions),
        subset_accuracy: ratio(rows_right, rows as u64),
        label_wise_accuracy: ratio(decisions - wrong, decisions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_classes_by_hand() {
        // rows: (0.9, 0.2) true (1, 0): both right; (0.6, 0.7) true (0, 1): class 0 wrong;
        // (0.3, 0.5) true (1, 1): class 0 wrong, class 1 right at 0.5 (>=).
        let scores = [0.9, 0.2, 0.6, 0.7, 0.3, 0.5];
        let labels = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let m = threshold_metrics(&scores, &labels, 2, &[0.5, 0.5]).unwrap();
        assert_eq!(m.confusion[0], Confusion { tp: 1, fp: 1, tn: 0, fn_: 1 });
        assert_eq!(m.confusion[1], Confusion { tp: 2, fp: 0, tn: 1, fn_: 0 });
        assert_eq!(m.hamming_loss, 2.0 / 6.0);
        assert_eq!(m.subset_accuracy, 1.0 / 3.0);
        assert_eq!(m.confusion[0].f1(), 0.5);
        assert!(threshold_metrics(&scores, &labels, 2, &[0.5]).is_err());
    }
}
