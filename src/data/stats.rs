//! Label statistics of a dataset: per-finding image and patient counts, normal images, the
//! labels-per-image histogram, and split sizes.

use super::{Dataset, FINDINGS};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Counts for one finding.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingCount {
    pub name: String,
    pub images: usize,
    /// Patients with at least one positive image (`None` when patients are unknown).
    pub patients: Option<usize>,
}

/// Size of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSize {
    pub name: String,
    pub images: usize,
    pub patients: Option<usize>,
}

/// Label statistics of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub images: usize,
    /// Distinct patients (`None` when the source has no patient ids).
    pub patients: Option<usize>,
    pub findings: Vec<FindingCount>,
    /// Images with no positive label ("No Finding").
    pub normal_images: usize,
    /// Patients all of whose images are normal.
    pub normal_patients: Option<usize>,
    /// `labels_per_image[k]` = images with exactly k positive labels.
    pub labels_per_image: Vec<usize>,
    pub splits: Vec<SplitSize>,
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// Patient count of `ds`, if every image has a patient id.
fn patient_count(ds: &dyn Dataset) -> Option<usize> {
    let mut set = HashSet::new();
    for i in 0..ds.len() {
        set.insert(ds.patient(i)?);
    }
    Some(set.len())
}

impl Stats {
    /// Computes the statistics of `ds`. Label names follow [`FINDINGS`] when there are 14 labels,
    /// else `label <k>`.
    pub fn compute(ds: &dyn Dataset) -> Stats {
        let width = if ds.is_empty() { FINDINGS.len() } else { ds.labels(0).len() };
        let has_patients = (0..ds.len()).all(|i| ds.patient(i).is_some());
        let mut images = vec![0usize; width];
        let mut pos_patients: Vec<HashSet<&str>> = vec![HashSet::new(); width];
        let mut abnormal_patients: HashSet<&str> = HashSet::new();
        let mut all_patients: HashSet<&str> = HashSet::new();
        let mut hist = vec![0usize; width + 1];
        let mut normal = 0;
        for i in 0..ds.len() {
            let l = ds.labels(i);
            let k = l.iter().filter(|&&v| v > 0.5).count();
            hist[k.min(width)] += 1;
            let patient = ds.patient(i);
            if let Some(p) = patient {
                all_patients.insert(p);
            }
            if k == 0 {
                normal += 1;
            } else if let Some(p) = patient {
                abnormal_patients.insert(p);
            }
            for (c, &v) in l.iter().enumerate().take(width) {
                if v > 0.5 {
                    images[c] += 1;
                    if let Some(p) = patient {
                        pos_patients[c].insert(p);
                    }
                }
            }
        }
        while hist.len() > 1 && *hist.last().unwrap() == 0 {
            hist.pop();
        }
        let findings = (0..width)
            .map(|c| FindingCount {
                name: if width == FINDINGS.len() { FINDINGS[c].to_string() } else { format!("label {c}") },
                images: images[c],
                patients: has_patients.then(|| pos_patients[c].len()),
            })
            .collect();
        Stats {
            images: ds.len(),
            patients: has_patients.then_some(all_patients.len()),
            findings,
            normal_images: normal,
            normal_patients: has_patients.then(|| all_patients.len() - abnormal_patients.len()),
            labels_per_image: hist,
            splits: Vec::new(),
        }
    }

    /// Adds the size of a split.
    pub fn add_split(&mut self, name: &str, ds: &dyn Dataset) {
        self.splits.push(SplitSize { name: name.to_string(), images: ds.len(), patients: patient_count(ds) });
    }

    /// Positive fraction per finding (for class weights).
    pub fn prevalence(&self) -> Vec<f64> {
        self.findings.iter().map(|f| pct(f.images, self.images) / 100.0).collect()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        writeln!(f, "images: {}   patients: {}", self.images, opt(self.patients))?;
        writeln!(f)?;
        writeln!(f, "{:<20} {:>8} {:>7} {:>9} {:>7}", "finding", "images", "%", "patients", "%")?;
        let np = self.patients.unwrap_or(0);
        for c in &self.findings {
            let (p, pp) = match c.patients {
                Some(p) => (p.to_string(), format!("{:.1}", pct(p, np))),
                None => ("-".into(), "-".into()),
            };
            writeln!(f, "{:<20} {:>8} {:>7.1} {:>9} {:>7}", c.name, c.images, pct(c.images, self.images), p, pp)?;
        }
        let (p, pp) = match self.normal_patients {
            Some(p) => (p.to_string(), format!("{:.1}", pct(p, np))),
            None => ("-".into(), "-".into()),
        };
        writeln!(
            f,
            "{:<20} {:>8} {:>7.1} {:>9} {:>7}",
            "No Finding",
            self.normal_images,
            pct(self.normal_images, self.images),
            p,
            pp
        )?;
        writeln!(f)?;
        writeln!(f, "labels per image:")?;
        for (k, n) in self.labels_per_image.iter().enumerate() {
            writeln!(f, "  {k:>2}: {n:>8} ({:.1}%)", pct(*n, self.images))?;
        }
        if !self.splits.is_empty() {
            writeln!(f)?;
            writeln!(f, "{:<8} {:>8} {:>9}", "split", "images", "patients")?;
            for s in &self.splits {
                writeln!(f, "{:<8} {:>8} {:>9}", s.name, s.images, opt(s.patients))?;
            }
        }
        Ok(())
    }
}

/// Images per patient of `ds` (patients without id count their image alone).
pub fn images_per_patient(ds: &dyn Dataset) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in 0..ds.len() {
        *m.entry(ds.patient(i).unwrap_or(ds.image_id(i)).to_string()).or_insert(0) += 1;
    }
    m
}

/// An image that failed [`check_images`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckFailure {
    pub index: usize,
    pub image: String,
    pub path: Option<std::path::PathBuf>,
    pub error: String,
}

/// Verifies that every image of `ds` exists and decodes, in parallel on rayon's pool. File
/// sources are decoded at full size; other sources go through [`Dataset::image`] at 8x8.
pub fn check_images(ds: &dyn Dataset) -> Vec<CheckFailure> {
    use rayon::prelude::*;
    let tiny = super::Preprocess { channels: 1, size: 8, normalization: super::Normalization::UnitRange };
    let mut failures: Vec<CheckFailure> = (0..ds.len())
        .into_par_iter()
        .filter_map(|i| {
            let result = match ds.image_path(i) {
                Some(p) => super::transform::load_image(p).map(|_| ()),
                None => ds.image(i, &tiny, None).map(|_| ()),
            };
            result.err().map(|e| CheckFailure {
                index: i,
                image: ds.image_id(i).to_string(),
                path: ds.image_path(i).map(|p| p.to_path_buf()),
                error: e.to_string(),
            })
        })
        .collect();
    failures.sort_by_key(|f| f.index);
    failures
}
