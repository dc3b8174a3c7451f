//! The evaluation report: every metric of a [rows x classes] score matrix against its labels,
//! gathered into [`EvalReport`] (serialised as `metrics.json`), with the per-class CSV and the
//! text table `tools eval` prints.

use super::bootstrap::{bootstrap_auroc, clusters_from_patients, BootstrapOptions, Interval, ResampleUnit};
use super::precision_recall::average_precision;
use super::roc::{roc_curve, youden, RocCurve, YoudenPoint};
use super::threshold::{threshold_metrics, Confusion};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Scores with their ground truth: what a model produced on a dataset split.
#[derive(Debug, Clone, Copy)]
pub struct EvalInput<'a> {
    /// Probabilities, row-major [rows x classes].
    pub scores: &'a [f32],
    /// 0/1 labels, same layout.
    pub labels: &'a [f32],
    /// Class names, one per column.
    pub names: &'a [String],
    /// The patient of each row, when known (drives the cluster bootstrap).
    pub patients: &'a [Option<&'a str>],
}

/// Where the decision thresholds come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ThresholdChoice {
    /// One value for every class (0.5 is the MLP lab's).
    Fixed(f64),
    /// Each class's Youden J threshold on the evaluated data itself (optimistic on that data).
    Youden,
    /// One value per class (for example the thresholds stored in a checkpoint).
    PerClass(Vec<f64>),
}

impl ThresholdChoice {
    /// Parses `0.5`, `youden`, or a comma list of one value per class; values must lie in (0, 1).
    pub fn parse(text: &str, classes: usize) -> Result<ThresholdChoice> {
        if text.trim().eq_ignore_ascii_case("youden") {
            return Ok(ThresholdChoice::Youden);
        }
        let values: Vec<f64> =
            text.split(',').map(|v| v.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(|_| {
                bad_threshold(format!("{text:?} is not `youden`, a number, or a comma list of numbers"))
            })?;
        if let Some(v) = values.iter().find(|v| !(**v > 0.0 && **v < 1.0)) {
            return Err(bad_threshold(format!("{v} is outside (0, 1): thresholds are probabilities")));
        }
        match values.len() {
            1 => Ok(ThresholdChoice::Fixed(values[0])),
            n if n == classes => Ok(ThresholdChoice::PerClass(values)),
            n => Err(bad_threshold(format!("{n} values given; expected 1 or one per class ({classes})"))),
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            ThresholdChoice::Fixed(t) => format!("{t}"),
            ThresholdChoice::Youden => "youden".into(),
            ThresholdChoice::PerClass(_) => "per-class".into(),
        }
    }

    /// The per-class thresholds, given each class's Youden point (None where it is undefined).
    pub fn resolve(&self, names: &[String], youden: &[Option<YoudenPoint>]) -> Result<Vec<f64>> {
        match self {
            ThresholdChoice::Fixed(t) => Ok(vec![*t; names.len()]),
            ThresholdChoice::PerClass(v) if v.len() == names.len() => Ok(v.clone()),
            ThresholdChoice::PerClass(v) => {
                Err(bad_threshold(format!("{} thresholds for {} classes ({})", v.len(), names.len(), names.join(", "))))
            }
            ThresholdChoice::Youden => youden_thresholds(names, youden),
        }
    }
}

fn bad_threshold(detail: String) -> Error {
    Error::InvalidArgument { op: "threshold", detail }
}

/// Every class's Youden threshold, or an error naming the classes that have none (a class
/// lacking positives or negatives, or one where no threshold beats chance).
pub fn youden_thresholds(names: &[String], youden: &[Option<YoudenPoint>]) -> Result<Vec<f64>> {
    let missing: Vec<&str> = names
        .iter()
        .zip(youden)
        .filter(|(_, y)| !y.is_some_and(|y| y.threshold.is_finite()))
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(bad_threshold(format!(
            "no Youden threshold for {} (the data lacks positives or negatives for it, or no threshold beats chance); \
             evaluate on a larger split or give the thresholds explicitly",
            missing.join(", ")
        )));
    }
    Ok(youden.iter().flatten().map(|y| y.threshold).collect())
}

/// Everything reported about one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub name: String,
    pub positives: u64,
    pub negatives: u64,
    /// Exact AUROC; None when the class lacks positives or negatives.
    pub auroc: Option<f64>,
    pub auroc_ci: Option<Interval>,
    /// Bootstrap resamples that lacked positives or negatives for this class.
    pub auroc_ci_skipped: usize,
    pub average_precision: Option<f64>,
    pub youden: Option<YoudenPoint>,
    /// The decision threshold used for the metrics below (positive when score >= threshold).
    pub threshold: f64,
    pub confusion: Confusion,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub specificity: f64,
    /// Positives (sklearn's support).
    pub support: u64,
    /// The ROC curve (sklearn's default `drop_intermediate=True` points).
    pub roc: Option<RocCurve>,
}

/// A class left out of the mean AUROC, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedClass {
    pub name: String,
    pub reason: String,
}

/// How the confidence intervals were made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapSummary {
    pub resamples: usize,
    pub seed: u64,
    pub confidence: f64,
    pub unit: ResampleUnit,
    pub clusters: usize,
}

/// The whole evaluation (`metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The checkpoint, data source and split, filled in by the caller.
    pub checkpoint: Option<String>,
    pub data: Option<String>,
    pub split: Option<String>,
    pub images: usize,
    /// Distinct patients, when patient ids are known.
    pub patients: Option<usize>,
    pub threshold_mode: String,
    pub classes: Vec<ClassReport>,
    /// Mean over the classes with both labels.
    pub mean_auroc: Option<f64>,
    pub mean_auroc_ci: Option<Interval>,
    pub mean_auroc_ci_skipped: usize,
    pub mean_auroc_classes: usize,
    pub skipped: Vec<SkippedClass>,
    pub hamming_loss: f64,
    pub subset_accuracy: f64,
    pub label_wise_accuracy: f64,
    pub bootstrap: Option<BootstrapSummary>,
}

fn column(m: &[f32], classes: usize, c: usize) -> Vec<f32> {
    m.iter().skip(c).step_by(classes).copied().collect()
}

fn check_input(input: &EvalInput) -> Result<usize> {
    let classes = input.names.len();
    let rows = input.patients.len();
    if classes == 0 || rows == 0 || input.scores.len() != rows * classes || input.labels.len() != rows * classes {
        return Err(Error::InvalidArgument {
            op: "evaluate",
            detail: format!(
                "{} scores and {} labels for {rows} images x {classes} classes",
                input.scores.len(),
                input.labels.len()
            ),
        });
    }
    if input.scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::NonFinite { what: "model scores".into(), step: None });
    }
    Ok(classes)
}

/// Computes the full report: per-class AUROC (with bootstrap CI), AP, ROC and Youden point,
/// decision metrics at `thresholds`, and the multi-label summaries.
pub fn evaluate(input: &EvalInput, thresholds: &ThresholdChoice, bootstrap: &BootstrapOptions) -> Result<EvalReport> {
    let classes = check_input(input)?;
    let scores: Vec<Vec<f32>> = (0..classes).map(|c| column(input.scores, classes, c)).collect();
    let labels: Vec<Vec<f32>> = (0..classes).map(|c| column(input.labels, classes, c)).collect();
    let aurocs: Vec<Option<f64>> = (0..classes).map(|c| super::auroc(&scores[c], &labels[c])).collect();
    let youdens: Vec<Option<YoudenPoint>> =
        (0..classes).map(|c| roc_curve(&scores[c], &labels[c], false).map(|r| youden(&r))).collect();
    let chosen = thresholds.resolve(input.names, &youdens)?;
    let decisions = threshold_metrics(input.scores, input.labels, classes, &chosen)?;

    let defined: Vec<usize> = (0..classes).filter(|&c| aurocs[c].is_some()).collect();
    let (clusters, count, unit) = clusters_from_patients(input.patients);
    let boot = (bootstrap.resamples > 0)
        .then(|| bootstrap_auroc(input.scores, input.labels, classes, (&clusters, count, unit), &defined, bootstrap))
        .transpose()?;

    let mut report_classes = Vec::with_capacity(classes);
    let mut skipped = Vec::new();
    for c in 0..classes {
        let m = decisions.confusion[c];
        let positives = labels[c].iter().filter(|&&l| l > 0.5).count() as u64;
        let negatives = labels[c].len() as u64 - positives;
        if aurocs[c].is_none() {
            let reason = if positives == 0 { "no positive images" } else { "no negative images" };
            skipped.push(SkippedClass { name: input.names[c].clone(), reason: reason.into() });
        }
        let ci = boot.as_ref().map(|b| b.per_class[c]);
        report_classes.push(ClassReport {
            name: input.names[c].clone(),
            positives,
            negatives,
            auroc: aurocs[c],
            auroc_ci: ci.and_then(|b| b.ci),
            auroc_ci_skipped: ci.map_or(0, |b| b.skipped),
            average_precision: average_precision(&scores[c], &labels[c]),
            youden: youdens[c],
            threshold: chosen[c],
            confusion: m,
            precision: m.precision(),
            recall: m.recall(),
            f1: m.f1(),
            specificity: m.specificity(),
            support: m.support(),
            roc: roc_curve(&scores[c], &labels[c], true),
        });
    }
    let mean_auroc = (!defined.is_empty())
        .then(|| defined.iter().map(|&c| aurocs[c].unwrap_or(0.0)).sum::<f64>() / defined.len() as f64);
    Ok(EvalReport {
        checkpoint: None,
        data: None,
        split: None,
        images: input.patients.len(),
        patients: (unit == ResampleUnit::Patient).then_some(count),
        threshold_mode: thresholds.describe(),
        classes: report_classes,
        mean_auroc,
        mean_auroc_ci: boot.as_ref().and_then(|b| b.mean.ci),
        mean_auroc_ci_skipped: boot.as_ref().map_or(0, |b| b.mean.skipped),
        mean_auroc_classes: defined.len(),
        skipped,
        hamming_loss: decisions.hamming_loss,
        subset_accuracy: decisions.subset_accuracy,
        label_wise_accuracy: decisions.label_wise_accuracy,
        bootstrap: boot.map(|b| BootstrapSummary {
            resamples: b.resamples,
            seed: b.seed,
            confidence: b.confidence,
            unit: b.unit,
            clusters: b.clusters,
        }),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn ci(v: Option<Interval>) -> String {
    v.map_or_else(|| "[   -  ,   -  ]".into(), |i| format!("[{:.3}, {:.3}]", i.lower, i.upper))
}

impl EvalReport {
    /// The per-class table followed by the summary lines, as `tools eval` prints it.
    pub fn table(&self) -> String {
        let level = self.bootstrap.as_ref().map_or(95.0, |b| b.confidence * 100.0);
        let mut out = format!(
            "{:<19} {:>5} {:>5} {:>6} {:>16} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6}\n",
            "finding",
            "pos",
            "neg",
            "AUROC",
            format!("{level:.0}% CI"),
            "AP",
            "thresh",
            "prec",
            "recall",
            "F1",
            "spec"
        );
        for c in &self.classes {
            let _ = writeln!(
                out,
                "{:<19} {:>5} {:>5} {:>6} {:>16} {:>6} {:>7.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
                c.name,
                c.positives,
                c.negatives,
                opt(c.auroc),
                ci(c.auroc_ci),
                opt(c.average_precision),
                c.threshold,
                c.precision,
                c.recall,
                c.f1,
                c.specificity
            );
        }
        let _ = writeln!(
            out,
            "\nmean AUROC {} {} over {} of {} classes",
            opt(self.mean_auroc),
            ci(self.mean_auroc_ci),
            self.mean_auroc_classes,
            self.classes.len()
        );
        if let Some(b) = self.bootstrap.as_ref().filter(|_| self.mean_auroc_ci_skipped > 0) {
            let _ = writeln!(
                out,
                "  (its CI uses {} of {} resamples; the others lacked positives or negatives for a class)",
                b.resamples - self.mean_auroc_ci_skipped,
                b.resamples
            );
        }
        let _ = writeln!(
            out,
            "hamming loss {:.4}   subset accuracy {:.4}   label-wise accuracy {:.4}   (thresholds: {})",
            self.hamming_loss, self.subset_accuracy, self.label_wise_accuracy, self.threshold_mode
        );
        for reason in ["no positive images", "no negative images"] {
            let names: Vec<&str> =
                self.skipped.iter().filter(|s| s.reason == reason).map(|s| s.name.as_str()).collect();
            if !names.is_empty() {
                let _ = writeln!(out, "skipped (AUROC undefined, {reason}): {}", names.join(", "));
            }
        }
        if let Some(b) = &self.bootstrap {
            let unit = match b.unit {
                ResampleUnit::Patient => "patients",
                ResampleUnit::Image => "images (no patient ids)",
            };
            let _ = writeln!(
                out,
                "CI: percentile bootstrap, {} resamples of {} {unit}, seed {}",
                b.resamples, b.clusters, b.seed
            );
        }
        out
    }

    /// One CSV row per class.
    pub fn per_class_csv(&self) -> String {
        let mut out = String::from(
            "finding,positives,negatives,auroc,auroc_ci_lower,auroc_ci_upper,average_precision,youden_threshold,\
             threshold,tp,fp,tn,fn,precision,recall,f1,specificity,support\n",
        );
        let num = |v: Option<f64>| v.filter(|v| v.is_finite()).map_or_else(String::new, |v| format!("{v}"));
        for c in &self.classes {
            let m = &c.confusion;
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                c.name,
                c.positives,
                c.negatives,
                num(c.auroc),
                num(c.auroc_ci.map(|i| i.lower)),
                num(c.auroc_ci.map(|i| i.upper)),
                num(c.average_precision),
                num(c.youden.map(|y| y.threshold)),
                c.threshold,
                m.tp,
                m.fp,
                m.tn,
                m.fn_,
                c.precision,
                c.recall,
                c.f1,
                c.specificity,
                c.support
            );
        }
        out
    }
}
