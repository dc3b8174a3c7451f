//! One entry point for every data source: [`open_source`] turns a `--data` value into train, val
//! and test datasets.
//!
//! Accepted specs:
//! - `phantom`, `phantom:COUNT`, `phantom:COUNT:SIZE`: synthetic phantoms (default 512 at 64 px);
//! - a MedMNIST name (`chestmnist`, `chestmnist_64`, `_128`, `_224`, `pneumoniamnist...`):
//!   downloaded to the cache when absent ([`super::download`]);
//! - a path to an `.npz` file: MedMNIST layout, official splits;
//! - a folder with `Data_Entry_2017*.csv[.gz]`: the NIH release (official lists if present, else
//!   a seeded patient-level split);
//! - a `.csv` file, or a folder with `labels.csv`: the generic CSV layout, patient-level split.

use super::csv_source::{CsvOptions, CsvSource};
use super::download::{self, DownloadOptions};
use super::medmnist::{MedMnist, MedMnistOptions};
use super::nih::{self, Nih, NihOptions};
use super::phantom::Phantoms;
use super::split::{check_leakage, patient_split, Concat, Fractions, Split, Subset};
use super::Dataset;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of [`open_source`].
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Split fractions for sources without an official split (default 0.7/0.1/0.2).
    pub fractions: Fractions,
    /// Split seed (also the phantom seed).
    pub seed: u64,
    /// View filter (`PA` / `AP`) for NIH and CSV sources.
    pub view: Option<String>,
    /// Drop rows whose image file is missing (counted in the warnings) instead of failing.
    pub skip_missing: bool,
    /// NIH sources: read the label file only, without looking for images (statistics, splits).
    pub labels_only: bool,
    /// Proceed even when a patient appears in two splits (a warning instead of an error).
    pub allow_leakage: bool,
    /// Images folder for CSV sources.
    pub images_dir: Option<PathBuf>,
    /// Label width for non-ChestMNIST `.npz` files (default 14).
    pub label_count: Option<usize>,
    pub download: DownloadOptions,
    pub medmnist: MedMnistOptions,
}

/// What kind of source a spec named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Phantom,
    MedMnist(PathBuf),
    Nih(PathBuf),
    Csv(PathBuf),
}

/// An opened source with its splits.
#[derive(Clone)]
pub struct Source {
    pub kind: SourceKind,
    /// A one-line description.
    pub description: String,
    /// Every image.
    pub all: Arc<dyn Dataset>,
    /// The split, as indices into `all`.
    pub split: Split,
    pub train: Arc<dyn Dataset>,
    pub val: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
    /// Things the user should know (skipped rows, allowed leakage).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .field("images", &self.all.len())
            .field("split", &(self.train.len(), self.val.len(), self.test.len()))
            .finish()
    }
}

impl Source {
    /// The named split (`train`, `val`, `test` or `all`).
    pub fn part(&self, name: &str) -> Result<Arc<dyn Dataset>> {
        match name {
            "train" => Ok(self.train.clone()),
            "val" => Ok(self.val.clone()),
            "test" => Ok(self.test.clone()),
            "all" => Ok(self.all.clone()),
            _ => Err(Error::InvalidArgument {
                op: "split",
                detail: format!("unknown split {name:?} (train, val, test, all)"),
            }),
        }
    }
}

/// What a spec names, without opening it.
pub fn detect(spec: &str) -> Result<SourceKind> {
    if spec == "phantom" || spec.starts_with("phantom:") {
        return Ok(SourceKind::Phantom);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        if nih::find_label_file(path).is_some() {
            return Ok(SourceKind::Nih(path.to_path_buf()));
        }
        if path.join("labels.csv").is_file() {
            return Ok(SourceKind::Csv(path.join("labels.csv")));
        }
        return Err(Error::data(
            spec,
            format!("folder has neither {} (NIH) nor labels.csv", nih::LABEL_FILES.join(" / ")),
        ));
    }
    let lower = spec.to_ascii_lowercase();
    if lower.ends_with(".npz") {
        return if path.is_file() {
            Ok(SourceKind::MedMnist(path.to_path_buf()))
        } else {
            Err(Error::data(spec, "no such .npz file"))
        };
    }
    if lower.ends_with(".csv") || lower.ends_with(".csv.gz") {
        if path.is_file() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with("Data_Entry_2017") {
                return Ok(SourceKind::Nih(path.parent().unwrap_or(Path::new(".")).to_path_buf()));
            }
            return Ok(SourceKind::Csv(path.to_path_buf()));
        }
        return Err(Error::data(spec, "no such CSV file"));
    }
    if download::medmnist_info(spec).is_some() {
        return Ok(SourceKind::MedMnist(PathBuf::from(spec)));
    }
    Err(Error::data(
        spec,
        format!(
            "not a data source: expected `phantom`, an .npz file, an NIH folder, a CSV file, or one of {}",
            download::MEDMNIST_FILES.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
        ),
    ))
}

fn parse_phantom(spec: &str) -> Result<(usize, usize)> {
    let parts: Vec<&str> = spec.split(':').skip(1).collect();
    let num = |s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| Error::data(spec, "expected phantom[:COUNT[:SIZE]] with positive integers"))
    };
    let count = parts.first().map(|s| num(s)).transpose()?.unwrap_or(512);
    let size = parts.get(1).map(|s| num(s)).transpose()?.unwrap_or(64);
    if parts.len() > 2 {
        return Err(Error::data(spec, "expected phantom[:COUNT[:SIZE]]"));
    }
    Ok((count, size))
}

fn with_split(
    kind: SourceKind,
    description: String,
    all: Arc<dyn Dataset>,
    split: Split,
    options: &SourceOptions,
    mut warnings: Vec<String>,
) -> Result<Source> {
    let report = check_leakage(all.as_ref(), &split, options.allow_leakage)?;
    if !report.is_clean() {
        warnings.push(format!("patient leakage allowed: {}", report.describe()));
    }
    let sub = |idx: &Vec<usize>| -> Result<Arc<dyn Dataset>> { Ok(Arc::new(Subset::new(all.clone(), idx.clone())?)) };
    Ok(Source {
        kind,
        description,
        train: sub(&split.train)?,
        val: sub(&split.val)?,
        test: sub(&split.test)?,
        all,
        split,
        warnings,
    })
}

/// Opens the source `spec` (see the module documentation).
pub fn open_source(spec: &str, options: &SourceOptions) -> Result<Source> {
    let kind = detect(spec)?;
    match &kind {
        SourceKind::Phantom => {
            let (count, size) = parse_phantom(spec)?;
            let all: Arc<dyn Dataset> = Arc::new(Phantoms::new(count, size, options.seed));
            let split = patient_split(all.as_ref(), options.fractions, options.seed)?;
            let description = format!("phantoms: {count} images of {size}x{size}, seed {}", options.seed);
            with_split(kind, description, all, split, options, Vec::new())
        }
        SourceKind::MedMnist(p) => {
            let (path, label_count) = if p.extension().is_some_and(|e| e == "npz") {
                (p.clone(), options.label_count.unwrap_or(super::FINDINGS.len()))
            } else {
                let name = p.to_string_lossy().into_owned();
                let width = download::medmnist_info(&name).map(|i| i.2).unwrap_or(super::FINDINGS.len());
                (download::medmnist(&name, &options.download)?, options.label_count.unwrap_or(width))
            };
            let mopts = MedMnistOptions { label_count, ..options.medmnist.clone() };
            let [tr, va, te] = MedMnist::open_splits(&path, &mopts)?;
            let (h, w, c) = tr.image_shape();
            let (ntr, nva, nte) = (tr.len(), va.len(), te.len());
            let (train, val, test): (Arc<dyn Dataset>, Arc<dyn Dataset>, Arc<dyn Dataset>) =
                (Arc::new(tr), Arc::new(va), Arc::new(te));
            let all: Arc<dyn Dataset> = Arc::new(Concat::new(vec![train.clone(), val.clone(), test.clone()]));
            let split = Split {
                train: (0..ntr).collect(),
                val: (ntr..ntr + nva).collect(),
                test: (ntr + nva..ntr + nva + nte).collect(),
            };
            let description =
                format!("MedMNIST {}: {ntr}/{nva}/{nte} images of {h}x{w}x{c}, official split", path.display());
            Ok(Source {
                kind: SourceKind::MedMnist(path),
                description,
                all,
                split,
                train,
                val,
                test,
                warnings: Vec::new(),
            })
        }
        SourceKind::Nih(folder) => {
            let nopts = NihOptions {
                view: options.view.clone(),
                skip_missing: options.skip_missing,
                limit: None,
                labels_only: options.labels_only,
            };
            let nih = Nih::open(folder, &nopts)?;
            let mut warnings = Vec::new();
            if !nih.missing.is_empty() {
                warnings.push(format!("{} listed images are missing and were skipped", nih.missing.len()));
            }
            let split = nih.split(options.fractions, options.seed)?;
            let how = match &nih.official {
                Some(_) => "official split lists".to_string(),
                None => format!("patient-level split seed {}", options.seed),
            };
            let description = format!("NIH {}: {} images ({how})", nih.label_file.display(), nih.data.len());
            with_split(kind.clone(), description, Arc::new(nih.data), split, options, warnings)
        }
        SourceKind::Csv(path) => {
            let copts = CsvOptions {
                view: options.view.clone(),
                skip_missing: options.skip_missing,
                images_dir: options.images_dir.clone(),
                ..CsvOptions::default()
            };
            let src = CsvSource::open(path, &copts)?;
            let mut warnings = Vec::new();
            if !src.missing.is_empty() {
                warnings.push(format!("{} listed images are missing and were skipped", src.missing.len()));
            }
            let split = patient_split(&src.data, options.fractions, options.seed)?;
            let description = format!(
                "CSV {}: {} images (patient-level split seed {})",
                path.display(),
                src.data.len(),
                options.seed
            );
            with_split(kind.clone(), description, Arc::new(src.data), split, options, warnings)
        }
    }
}
