//! Percentile bootstrap confidence intervals for per-class and mean AUROC.
//!
//! Images of one patient are correlated (follow-ups, the same lungs), so when patient ids are
//! known a resample draws *patients* with replacement and takes all their images (a cluster
//! bootstrap); otherwise it draws images. Each resample is a vector of per-image multiplicities,
//! and its AUROC is the Mann-Whitney statistic weighted by them, computed in one pass over an
//! order sorted once per class: exact, and O(images) per resample instead of a fresh sort.
//!
//! Resample b draws from its own generator seeded by (seed, b), so the result depends only on
//! the seed and the number of resamples, not on the thread count.

use crate::error::{Error, Result};
use crate::tensor::init::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How many resamples, from which seed, at which confidence level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootstrapOptions {
    /// Number of resamples (0 disables the bootstrap).
    pub resamples: usize,
    pub seed: u64,
    /// Two-sided confidence level in (0, 1), e.g. 0.95.
    pub confidence: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions { resamples: 1000, seed: 0, confidence: 0.95 }
    }
}

/// What a resample draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResampleUnit {
    /// Whole patients (cluster bootstrap).
    Patient,
    /// Single images (no patient ids).
    Image,
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// The interval of one statistic and how many resamples could not compute it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInterval {
    /// None when fewer than two resamples gave a value.
    pub ci: Option<Interval>,
    /// Resamples skipped because they lacked positives or negatives for the class (for the
    /// mean: for any class the mean covers).
    pub skipped: usize,
}

/// Bootstrap intervals of every class's AUROC and of the mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AurocBootstrap {
    pub resamples: usize,
    pub seed: u64,
    pub confidence: f64,
    pub unit: ResampleUnit,
    /// Patients (or images) drawn from.
    pub clusters: usize,
    pub per_class: Vec<BootstrapInterval>,
    /// Of the mean AUROC over the classes the point estimate averages.
    pub mean: BootstrapInterval,
}

/// Cluster ids (0..count) of rows keyed by patient: rows with the same key share a cluster, rows
/// without one are their own. The unit is `Patient` when any row has a key.
pub fn clusters_from_patients(patients: &[Option<&str>]) -> (Vec<usize>, usize, ResampleUnit) {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut count = 0;
    let clusters = patients
        .iter()
        .map(|p| {
            let mut fresh = || {
                count += 1;
                count - 1
            };
            match p {
                Some(key) => *ids.entry(key).or_insert_with(fresh),
                None => fresh(),
            }
        })
        .collect();
    let unit = if patients.iter().any(Option::is_some) { ResampleUnit::Patient } else { ResampleUnit::Image };
    (clusters, count, unit)
}

/// The generator of resample `b`: seeded by a mix of (seed, b) so streams do not overlap.
fn resample_rng(seed: u64, b: usize) -> Rng {
    let mut mixer = Rng::new(seed ^ (b as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    Rng::new(mixer.next_u64())
}

/// Per-row multiplicities of one resample: `count` clusters drawn with replacement, each row
/// weighted by how often its cluster was drawn.
pub fn resample_weights(clusters: &[usize], count: usize, rng: &mut Rng) -> Vec<u32> {
    let mut drawn = vec![0u32; count];
    for _ in 0..count {
        drawn[rng.below(count as u64) as usize] += 1;
    }
    clusters.iter().map(|&c| drawn[c]).collect()
}

/// One class's rows sorted by score ascending, cut into runs of equal scores.
struct SortedClass {
    order: Vec<usize>,
    /// End (exclusive) of each run of tied scores in `order`.
    run_ends: Vec<usize>,
    positive: Vec<bool>,
}

impl SortedClass {
    fn new(scores: &[f32], labels: &[f32]) -> SortedClass {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let run_ends =
            (1..=order.len()).filter(|&k| k == order.len() || scores[order[k]] != scores[order[k - 1]]).collect();
        SortedClass { order, run_ends, positive: labels.iter().map(|&l| l > 0.5).collect() }
    }

    /// The Mann-Whitney AUROC with row weights: sum over (positive, negative) pairs of
    /// w_p w_n (1 if s_p > s_n, 1/2 if tied) / (W_pos W_neg). None without both labels.
    fn weighted_auroc(&self, weights: &[u32]) -> Option<f64> {
        let (mut below, mut pairs, mut total_pos) = (0.0f64, 0.0f64, 0.0f64);
        let mut start = 0;
        for &end in &self.run_ends {
            let (mut pos, mut neg) = (0.0, 0.0);
            for &row in &self.order[start..end] {
                let w = weights[row] as f64;
                if self.positive[row] {
                    pos += w;
                } else {
                    neg += w;
                }
            }
            pairs += pos * (below + 0.5 * neg);
            below += neg;
            total_pos += pos;
            start = end;
        }
        (total_pos > 0.0 && below > 0.0).then(|| pairs / (total_pos * below))
    }
}

/// The `q` quantile of sorted `values` with linear interpolation (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (lo, frac) = (position.floor() as usize, position.fract());
    match sorted.get(lo + 1) {
        Some(&next) => sorted[lo] + frac * (next - sorted[lo]),
        None => sorted[lo],
    }
}

fn interval(mut values: Vec<f64>, resamples: usize, confidence: f64) -> BootstrapInterval {
    let skipped = resamples - values.len();
    if values.len() < 2 {
        return BootstrapInterval { ci: None, skipped };
    }
    values.sort_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    let ci = Interval { lower: quantile(&values, alpha / 2.0), upper: quantile(&values, 1.0 - alpha / 2.0) };
    BootstrapInterval { ci: Some(ci), skipped }
}

fn check(scores: &[f32], labels: &[f32], classes: usize, clusters: &[usize], options: &BootstrapOptions) -> Result<()> {
    let bad = |detail: String| Err(Error::InvalidArgument { op: "bootstrap", detail });
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return bad(format!("confidence {} must be in (0, 1)", options.confidence));
    }
    if classes == 0 || scores.len() != labels.len() || clusters.len() * classes != scores.len() {
        return bad(format!(
            "{} scores, {} labels and {} cluster ids for {classes} classes",
            scores.len(),
            labels.len(),
            clusters.len()
        ));
    }
    if scores.iter().any(|s| s.is_nan()) {
        return bad("a score is NaN".into());
    }
    Ok(())
}

/// Bootstrap intervals of the per-class AUROC of `scores` / `labels` ([rows x classes],
/// row-major), resampling the clusters `clusters[row]` in `0..cluster_count`. The mean covers
/// `mean_classes` (the classes with both labels in the full data); a resample lacking either
/// label for one of them is skipped for the mean.
pub fn bootstrap_auroc(
    scores: &[f32],
    labels: &[f32],
    classes: usize,
    (clusters, cluster_count, unit): (&[usize], usize, ResampleUnit),
    mean_classes: &[usize],
    options: &BootstrapOptions,
) -> Result<AurocBootstrap> {
    check(scores, labels, classes, clusters, options)?;
    let rows = clusters.len();
    let column = |m: &[f32], c: usize| (0..rows).map(|r| m[r * classes + c]).collect::<Vec<f32>>();
    let sorted: Vec<SortedClass> =
        (0..classes).map(|c| SortedClass::new(&column(scores, c), &column(labels, c))).collect();
    let draws: Vec<Vec<Option<f64>>> = (0..options.resamples)
        .into_par_iter()
        .map(|b| {
            let weights = resample_weights(clusters, cluster_count, &mut resample_rng(options.seed, b));
            sorted.iter().map(|s| s.weighted_auroc(&weights)).collect()
        })
        .collect();
    let per_class = (0..classes)
        .map(|c| interval(draws.iter().filter_map(|d| d[c]).collect(), options.resamples, options.confidence))
        .collect();
    let means = draws.iter().filter_map(|d| {
        let values: Option<Vec<f64>> = mean_classes.iter().map(|&c| d[c]).collect();
        values.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    });
    Ok(AurocBootstrap {
        resamples: options.resamples,
        seed: options.seed,
        confidence: options.confidence,
        unit,
        clusters: cluster_count,
        per_class,
        mean: interval(means.collect(), options.resamples, options.confidence),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_weights_give_the_plain_auroc() {
        let scores = [0.2, 0.4, 0.4, 0.4, 0.9, 0.1, 0.3];
        let labels = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let s = SortedClass::new(&scores, &labels);
        let got = s.weighted_auroc(&[1; 7]).unwrap();
        assert!((got - super::super::auroc(&scores, &labels).unwrap()).abs() < 1e-15);
        // Weight 2 on a row is the same as duplicating it.
        let dup_scores = [0.2, 0.4, 0.4, 0.4, 0.9, 0.1, 0.3, 0.9];
        let dup_labels = [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let got = s.weighted_auroc(&[1, 1, 1, 1, 2, 1, 1]).unwrap();
        assert!((got - super::super::auroc(&dup_scores, &dup_labels).unwrap()).abs() < 1e-15);
    }

    #[test]
    fn quantile_matches_numpy() {
        // numpy.quantile([1, 2, 3, 4], [0.025, 0.975]) = [1.075, 3.925]
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 0.025) - 1.075).abs() < 1e-12);
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 0.975) - 3.925).abs() < 1e-12);
    }
}
