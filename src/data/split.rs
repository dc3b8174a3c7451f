//! Patient-level splits, the leakage check, and dataset views ([`Subset`], [`Concat`]).
//!
//! Images of one patient are strongly correlated; a split that puts the same patient in train and
//! test inflates test AUROC. [`patient_split`] assigns whole patients to splits and
//! [`check_leakage`] refuses any split where a patient appears twice (unless explicitly allowed).

use super::{Augment, Dataset, LesionBox, Preprocess};
use crate::error::{Error, Result};
use crate::tensor::init::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// Split fractions (each in [0, 1], summing to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fractions {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Default for Fractions {
    /// 70 / 10 / 20, the NIH paper's proportions.
    fn default() -> Self {
        Fractions { train: 0.7, val: 0.1, test: 0.2 }
    }
}

impl Fractions {
    /// Checks each fraction is in [0, 1] and they sum to 1.
    pub fn check(&self) -> Result<()> {
        let all = [self.train, self.val, self.test];
        if all.iter().any(|f| !(0.0..=1.0).contains(f)) || ((all.iter().sum::<f64>()) - 1.0).abs() > 1e-6 {
            return Err(Error::InvalidArgument {
                op: "split",
                detail: format!("fractions must be in [0, 1] and sum to 1, got {all:?}"),
            });
        }
        Ok(())
    }
    /// Parses `0.7,0.1,0.2`.
    pub fn parse(text: &str) -> Result<Fractions> {
        let v: Vec<f64> =
            text.split(',').map(|s| s.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(|_| {
                Error::InvalidArgument {
                    op: "split",
                    detail: format!("expected three fractions like 0.7,0.1,0.2, got {text:?}"),
                }
            })?;
        if v.len() != 3 {
            return Err(Error::InvalidArgument {
                op: "split",
                detail: format!("expected three fractions like 0.7,0.1,0.2, got {text:?}"),
            });
        }
        let f = Fractions { train: v[0], val: v[1], test: v[2] };
        f.check()?;
        Ok(f)
    }
}

/// Index lists of a train/val/test split (each sorted ascending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

impl Split {
    /// The three parts with their names.
    pub fn parts(&self) -> [(&'static str, &[usize]); 3] {
        [("train", &self.train), ("val", &self.val), ("test", &self.test)]
    }
}

/// The patient key of image `i`: its patient id, or its image id when the patient is unknown.
fn patient_key(ds: &dyn Dataset, i: usize) -> &str {
    ds.patient(i).unwrap_or_else(|| ds.image_id(i))
}

/// A seeded patient-level split of the whole dataset: patients (sorted, then shuffled by `seed`)
/// are cut by `fractions` of the patient count; every image of a patient lands in its patient's
/// split. Images without a patient id count as their own patient.
pub fn patient_split(ds: &dyn Dataset, fractions: Fractions, seed: u64) -> Result<Split> {
    let all: Vec<usize> = (0..ds.len()).collect();
    patient_split_of(ds, &all, fractions, seed)
}

/// [`patient_split`] restricted to `indices` (returned indices are dataset indices).
pub fn patient_split_of(ds: &dyn Dataset, indices: &[usize], fractions: Fractions, seed: u64) -> Result<Split> {
    fractions.check()?;
    let mut by_patient: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &i in indices {
        by_patient.entry(patient_key(ds, i)).or_default().push(i);
    }
    let mut patients: Vec<&str> = by_patient.keys().copied().collect();
    let mut rng = Rng::new(seed);
    for i in (1..patients.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        patients.swap(i, j);
    }
    let n = patients.len();
    let n_train = (fractions.train * n as f64).round() as usize;
    let n_val = ((fractions.val * n as f64).round() as usize).min(n - n_train.min(n));
    let n_train = n_train.min(n);
    let mut split = Split::default();
    for (k, p) in patients.iter().enumerate() {
        let part = if k < n_train {
            &mut split.train
        } else if k < n_train + n_val {
            &mut split.val
        } else {
            &mut split.test
        };
        part.extend_from_slice(&by_patient[p]);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

/// What [`check_leakage`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakageReport {
    /// Patients in more than one split, with the splits they are in (sorted by patient).
    pub leaked: Vec<(String, Vec<&'static str>)>,
    /// Images belonging to leaked patients.
    pub leaked_images: usize,
}

impl LeakageReport {
    /// True when no patient crosses splits.
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty()
    }
    /// A one-line description: counts and the first few patients.
    pub fn describe(&self) -> String {
        let first: Vec<String> =
            self.leaked.iter().take(5).map(|(p, s)| format!("patient {p} ({})", s.join(", "))).collect();
        format!(
            "{} patient{} appear in more than one split ({} images): {}{}",
            self.leaked.len(),
            if self.leaked.len() == 1 { "" } else { "s" },
            self.leaked_images,
            first.join("; "),
            if self.leaked.len() > first.len() { "; ..." } else { "" }
        )
    }
}

/// Checks that no patient appears in two parts of `split`. A leak is an error naming the first
/// patients and the counts, unless `allow_leakage` (then the report carries it as a warning).
/// Images without a patient id are checked by image id.
pub fn check_leakage(ds: &dyn Dataset, split: &Split, allow_leakage: bool) -> Result<LeakageReport> {
    let mut seen: HashMap<&str, (u8, usize)> = HashMap::new();
    let names = ["train", "val", "test"];
    for (k, (_, part)) in split.parts().iter().enumerate() {
        for &i in *part {
            if i >= ds.len() {
                return Err(Error::data("split", format!("index {i} out of range ({} images)", ds.len())));
            }
            let e = seen.entry(patient_key(ds, i)).or_insert((0, 0));
            e.0 |= 1 << k;
            e.1 += 1;
        }
    }
    let mut report = LeakageReport::default();
    for (p, (mask, count)) in seen {
        if mask.count_ones() > 1 {
            let parts = (0..3).filter(|k| mask & (1 << k) != 0).map(|k| names[k]).collect();
            report.leaked.push((p.to_string(), parts));
            report.leaked_images += count;
        }
    }
    report.leaked.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    if !report.is_clean() && !allow_leakage {
        return Err(Error::data(
            "split",
            format!("patient leakage: {} (pass allow_leakage / --allow-leakage to proceed anyway)", report.describe()),
        ));
    }
    Ok(report)
}

/// Orders numeric strings numerically, others lexicographically.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// A dataset restricted to an index list (a split as a dataset).
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subset({} of {} images)", self.indices.len(), self.inner.len())
    }
}

impl Subset {
    /// `inner` restricted to `indices` (each must be in range).
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(Error::data("subset", format!("index {bad} out of range ({} images)", inner.len())));
        }
        Ok(Subset { inner, indices })
    }
    /// The indices into the inner dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
    /// The inner dataset.
    pub fn inner(&self) -> &Arc<dyn Dataset> {
        &self.inner
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn labels(&self, index: usize) -> &[f32] {
        self.inner.labels(self.indices[index])
    }
    fn patient(&self, index: usize) -> Option<&str> {
        self.inner.patient(self.indices[index])
    }
    fn image_id(&self, index: usize) -> &str {
        self.inner.image_id(self.indices[index])
    }
    fn image(&self, index: usize, preprocess: &Preprocess, augment: Option<(&Augment, u64)>) -> Result<Vec<f32>> {
        self.inner.image(self.indices[index], preprocess, augment)
    }
    fn boxes(&self, index: usize) -> (&[LesionBox], (usize, usize)) {
        self.inner.boxes(self.indices[index])
    }
    fn cache_key(&self) -> Option<String> {
        self.inner.cache_key()
    }
    fn image_path(&self, index: usize) -> Option<&Path> {
        self.inner.image_path(self.indices[index])
    }
}

/// Several datasets one after another (e.g. the three MedMNIST splits as one).
#[derive(Clone)]
pub struct Concat {
    parts: Vec<Arc<dyn Dataset>>,
    starts: Vec<usize>,
    len: usize,
}

impl Concat {
    /// The datasets in `parts`, in order.
    pub fn new(parts: Vec<Arc<dyn Dataset>>) -> Concat {
        let mut starts = Vec::with_capacity(parts.len());
        let mut len = 0;
        for p in &parts {
            starts.push(len);
            len += p.len();
        }
        Concat { parts, starts, len }
    }
    fn locate(&self, index: usize) -> (&dyn Dataset, usize) {
        let k = self.starts.partition_point(|&s| s <= index) - 1;
        (self.parts[k].as_ref(), index - self.starts[k])
    }
}

impl Dataset for Concat {
    fn len(&self) -> usize {
        self.len
    }
    fn labels(&self, index: usize) -> &[f32] {
        let (d, i) = self.locate(index);
        d.labels(i)
    }
    fn patient(&self, index: usize) -> Option<&str> {
        let (d, i) = self.locate(index);
        d.patient(i)
    }
    fn image_id(&self, index: usize) -> &str {
        let (d, i) = self.locate(index);
        d.image_id(i)
    }
    fn image(&self, index: usize, preprocess: &Preprocess, augment: Option<(&Augment, u64)>) -> Result<Vec<f32>> {
        let (d, i) = self.locate(index);
        d.image(i, preprocess, augment)
    }
    fn boxes(&self, index: usize) -> (&[LesionBox], (usize, usize)) {
        let (d, i) = self.locate(index);
        d.boxes(i)
    }
    fn cache_key(&self) -> Option<String> {
        let keys: Option<Vec<String>> = self.parts.iter().map(|p| p.cache_key()).collect();
        keys.map(|k| k.join("+"))
    }
    fn image_path(&self, index: usize) -> Option<&Path> {
        let (d, i) = self.locate(index);
        d.image_path(i)
    }
}
