//! A generic labelled-image CSV: an image path column, the 14 label columns named as in
//! [`FINDINGS`] (values 0/1), and optionally a patient id and a view column. The layout of
//! `nih256/labels.csv` and `nih64/labels.csv`:
//!
//! ```text
//! image,patient_id,Atelectasis,...,Hernia,view
//! 00000075_000.png,75,0,1,0,...,0,PA
//! ```
//!
//! Image paths are relative to [`CsvOptions::images_dir`] when given, else to the CSV's folder;
//! when a file is not there, `images/` under that folder is tried too.

use super::files::{file_identity, missing_summary, FileDataset, FileRecord};
use super::nih::open_maybe_gz;
use super::FINDINGS;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// How a CSV source is read.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// The image path column.
    pub image_column: String,
    /// The patient id column (`None`: patients unknown; each image is its own patient).
    pub patient_column: Option<String>,
    /// The view column (used only when present).
    pub view_column: String,
    /// Keep only this view (`PA` / `AP`).
    pub view: Option<String>,
    /// Base folder of the image paths.
    pub images_dir: Option<PathBuf>,
    /// Drop rows whose image is missing instead of failing.
    pub skip_missing: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            image_column: "image".into(),
            patient_column: Some("patient_id".into()),
            view_column: "view".into(),
            view: None,
            images_dir: None,
            skip_missing: false,
        }
    }
}

/// An opened CSV source.
#[derive(Debug, Clone)]
pub struct CsvSource {
    pub csv: PathBuf,
    pub data: FileDataset,
    /// Rows whose image was missing (only with `skip_missing`).
    pub missing: Vec<String>,
    /// Rows dropped by the view filter.
    pub filtered_by_view: usize,
}

fn parse_label(text: &str) -> Option<f32> {
    match text.trim() {
        "0" | "0.0" | "false" | "False" => Some(0.0),
        "1" | "1.0" | "true" | "True" => Some(1.0),
        _ => None,
    }
}

impl CsvSource {
    /// Reads the CSV at `csv_path`.
    pub fn open(csv_path: &Path, options: &CsvOptions) -> Result<CsvSource> {
        let name = csv_path.display().to_string();
        let mut rdr = csv::ReaderBuilder::new().from_reader(open_maybe_gz(csv_path)?);
        let headers = rdr.headers().map_err(|e| Error::data(&name, format!("cannot read the header: {e}")))?.clone();
        let find = |col: &str| headers.iter().position(|h| h.trim() == col);
        let missing_col = |col: &str| {
            Error::data(
                &name,
                format!("missing column {col:?} (columns: {})", headers.iter().collect::<Vec<_>>().join(", ")),
            )
        };
        let c_image = find(&options.image_column).ok_or_else(|| missing_col(&options.image_column))?;
        let c_labels: Vec<usize> =
            FINDINGS.iter().map(|f| find(f).ok_or_else(|| missing_col(f))).collect::<Result<_>>()?;
        let c_patient = match &options.patient_column {
            Some(c) => Some(find(c).ok_or_else(|| missing_col(c))?),
            None => None,
        };
        let c_view = find(&options.view_column);
        if options.view.is_some() && c_view.is_none() {
            return Err(missing_col(&options.view_column));
        }
        let base = options
            .images_dir
            .clone()
            .unwrap_or_else(|| csv_path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")));
        let nested = base.join("images");
        let mut records = Vec::new();
        let mut missing = Vec::new();
        let mut filtered = 0;
        for rec in rdr.records() {
            let rec = rec.map_err(|e| {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                Error::data(format!("{name}:{line}"), format!("malformed CSV row: {e}"))
            })?;
            let line = rec.position().map(|p| p.line()).unwrap_or(0);
            let loc = || format!("{name}:{line}");
            let image = rec[c_image].trim().to_string();
            if image.is_empty() {
                return Err(Error::data(loc(), format!("empty {:?} value", options.image_column)));
            }
            let mut labels = [0f32; 14];
            for (k, &c) in c_labels.iter().enumerate() {
                labels[k] = parse_label(&rec[c]).ok_or_else(|| {
                    Error::data(loc(), format!("{image}: {} is {:?}, expected 0 or 1", FINDINGS[k], &rec[c]))
                })?;
            }
            let patient = match c_patient {
                Some(c) => {
                    let p = rec[c].trim();
                    if p.is_empty() {
                        return Err(Error::data(loc(), format!("{image}: empty patient id")));
                    }
                    Some(p.to_string())
                }
                None => None,
            };
            let view = c_view.map(|c| rec[c].trim().to_string());
            if let (Some(want), Some(v)) = (&options.view, &view) {
                if !v.eq_ignore_ascii_case(want) {
                    filtered += 1;
                    continue;
                }
            }
            let direct = base.join(&image);
            let path = if direct.is_file() {
                direct
            } else if nested.join(&image).is_file() {
                nested.join(&image)
            } else {
                missing.push(image);
                continue;
            };
            let id = Path::new(&image).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(image);
            records.push(FileRecord { id, path, labels, patient, view });
        }
        if !missing.is_empty() && !options.skip_missing {
            return Err(Error::data(&name, missing_summary(&missing, &base.display().to_string())));
        }
        let data = FileDataset::new(format!("csv:{}", file_identity(csv_path)), records);
        Ok(CsvSource { csv: csv_path.to_path_buf(), data, missing, filtered_by_view: filtered })
    }
}
