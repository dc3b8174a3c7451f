//! The NIH ChestX-ray14 release folder.
//!
//! Layout as NIH ships it (any nesting works; images are found by walking the folder once):
//!
//! ```text
//! Data_Entry_2017.csv            (or Data_Entry_2017_v2020.csv, optionally .gz)
//! BBox_List_2017.csv             (optional, optionally .gz: radiologist boxes, 1024x1024 coords)
//! train_val_list.txt, test_list.txt   (optional official split)
//! images_001/images/00000001_000.png ...
//! ```
//!
//! `Finding Labels` is split on `|`; `No Finding` is all zeros; an unknown finding is an error
//! naming the file and line. Rows whose image is missing are an error (count and first few names)
//! unless [`NihOptions::skip_missing`] is set, in which case they are dropped and counted.

use super::files::{file_identity, index_images, missing_summary, FileDataset, FileRecord};
use super::split::{patient_split, patient_split_of, Fractions, Split};
use super::{Dataset, LesionBox, FINDINGS};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Label file names looked for, in order (each also as `.gz`).
pub const LABEL_FILES: [&str; 2] = ["Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv"];

/// How an NIH folder is opened.
#[derive(Debug, Clone, Default)]
pub struct NihOptions {
    /// Keep only this view position (`PA` or `AP`).
    pub view: Option<String>,
    /// Drop rows whose image file is missing (counted in [`Nih::missing`]) instead of failing.
    pub skip_missing: bool,
    /// Read only the first N rows of the label file.
    pub limit: Option<usize>,
    /// Labels only: do not look for image files (for statistics and splits of the label file
    /// alone; decoding an image then fails naming the expected path).
    pub labels_only: bool,
}

/// One row of `Data_Entry_2017.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct NihRow {
    pub image: String,
    pub labels: [f32; 14],
    pub patient: String,
    pub view: String,
    /// Line in the CSV file (the header is line 1).
    pub line: u64,
}

/// Opens a file, transparently gunzipping `.gz`.
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let r = std::io::BufReader::new(f);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

/// The index in [`FINDINGS`] of a finding name (case-insensitive; space and underscore equal).
pub fn finding_index(name: &str) -> Option<usize> {
    let norm = |s: &str| s.trim().to_ascii_lowercase().replace(' ', "_");
    let n = norm(name);
    FINDINGS.iter().position(|f| norm(f) == n)
}

/// Parses a `Finding Labels` value (`A|B`, `No Finding`) into 14 labels.
pub fn parse_findings(text: &str) -> std::result::Result<[f32; 14], String> {
    let mut labels = [0f32; 14];
    let text = text.trim();
    if text.is_empty() {
        return Err("empty Finding Labels".into());
    }
    if text.eq_ignore_ascii_case("No Finding") {
        return Ok(labels);
    }
    for part in text.split('|') {
        match finding_index(part) {
            Some(i) => labels[i] = 1.0,
            None if part.trim().eq_ignore_ascii_case("No Finding") => {
                return Err(format!("'No Finding' combined with findings in {text:?}"))
            }
            None => return Err(format!("unknown finding {:?} (known: {})", part.trim(), FINDINGS.join(", "))),
        }
    }
    Ok(labels)
}

fn column(headers: &csv::StringRecord, name: &str, file: &str) -> Result<usize> {
    headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
        Error::data(
            file,
            format!("missing column {name:?} (columns: {})", headers.iter().collect::<Vec<_>>().join(", ")),
        )
    })
}

/// Parses NIH's `Data_Entry_2017*.csv` from `reader`; `name` is used in errors. Reads at most
/// `limit` rows.
pub fn parse_data_entry(reader: impl Read, name: &str, limit: Option<usize>) -> Result<Vec<NihRow>> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = rdr.headers().map_err(|e| Error::data(name, format!("cannot read the header: {e}")))?.clone();
    let c_image = column(&headers, "Image Index", name)?;
    let c_find = column(&headers, "Finding Labels", name)?;
    let c_patient = column(&headers, "Patient ID", name)?;
    let c_view = column(&headers, "View Position", name)?;
    let needed = c_image.max(c_find).max(c_patient).max(c_view) + 1;
    let mut rows = Vec::new();
    for rec in rdr.records() {
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or(0);
            Error::data(format!("{name}:{line}"), format!("malformed CSV row: {e}"))
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let loc = || format!("{name}:{line}");
        if rec.len() < needed {
            return Err(Error::data(loc(), format!("row has {} fields, expected at least {needed}", rec.len())));
        }
        let image = rec[c_image].trim().to_string();
        if image.is_empty() {
            return Err(Error::data(loc(), "empty Image Index"));
        }
        let labels = parse_findings(&rec[c_find]).map_err(|e| Error::data(loc(), format!("{image}: {e}")))?;
        let patient = rec[c_patient].trim().to_string();
        if patient.is_empty() {
            return Err(Error::data(loc(), format!("{image}: empty Patient ID")));
        }
        rows.push(NihRow { image, labels, patient, view: rec[c_view].trim().to_string(), line });
    }
    Ok(rows)
}

/// Parses NIH's `BBox_List_2017.csv` (`Image Index,Finding Label,Bbox [x,y,w,h],...`) into boxes
/// per image (1024x1024 pixel coordinates).
pub fn parse_bbox_list(reader: impl Read, name: &str) -> Result<HashMap<String, Vec<LesionBox>>> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let mut map: HashMap<String, Vec<LesionBox>> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::data(name, format!("malformed CSV row: {e}")))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let loc = || format!("{name}:{line}");
        if rec.len() < 6 {
            return Err(Error::data(loc(), format!("row has {} fields, expected 6", rec.len())));
        }
        // NIH writes "Infiltrate" in the box list for the Infiltration finding.
        let label = rec[1].trim();
        let finding = finding_index(label)
            .or_else(|| (label == "Infiltrate").then_some(3))
            .ok_or_else(|| Error::data(loc(), format!("unknown finding {label:?}")))?;
        let num = |i: usize| -> Result<f32> {
            rec[i].trim().parse::<f32>().map_err(|_| Error::data(loc(), format!("bad box coordinate {:?}", &rec[i])))
        };
        let b = LesionBox { finding, x: num(2)?, y: num(3)?, w: num(4)?, h: num(5)? };
        map.entry(rec[0].trim().to_string()).or_default().push(b);
    }
    Ok(map)
}

/// Finds `name` or `name.gz` directly in `folder`.
fn find_file(folder: &Path, name: &str) -> Option<PathBuf> {
    [folder.join(name), folder.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// The NIH label file in `folder`, if any.
pub fn find_label_file(folder: &Path) -> Option<PathBuf> {
    LABEL_FILES.iter().find_map(|n| find_file(folder, n))
}

fn read_list(path: &Path) -> Result<Vec<String>> {
    let mut text = String::new();
    open_maybe_gz(path)?.read_to_string(&mut text).map_err(|e| Error::io(path, e))?;
    Ok(text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

/// The official lists found next to the labels.
#[derive(Debug, Clone)]
pub enum OfficialSplit {
    /// NIH's `train_val_list.txt` and `test_list.txt` (indices into the dataset).
    TrainValTest { train_val: Vec<usize>, test: Vec<usize> },
    /// `split_{train,val,test}_list.txt` (ChestMNIST's sizes).
    ThreeWay(Split),
}

/// An opened NIH folder.
#[derive(Debug, Clone)]
pub struct Nih {
    pub folder: PathBuf,
    pub label_file: PathBuf,
    pub data: FileDataset,
    /// Images listed but not found (only with `skip_missing`).
    pub missing: Vec<String>,
    /// Rows dropped by the view filter.
    pub filtered_by_view: usize,
    pub official: Option<OfficialSplit>,
}

impl Nih {
    /// Opens the NIH folder at `folder`.
    pub fn open(folder: &Path, options: &NihOptions) -> Result<Nih> {
        let label_file = find_label_file(folder).ok_or_else(|| {
            Error::data(
                folder.display(),
                format!("no NIH label file ({} or .gz) in the folder", LABEL_FILES.join(" / ")),
            )
        })?;
        let name = label_file.display().to_string();
        let rows = parse_data_entry(open_maybe_gz(&label_file)?, &name, options.limit)?;
        let images = if options.labels_only { Default::default() } else { index_images(folder)? };
        let mut records = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        let mut filtered = 0;
        for r in rows {
            if let Some(v) = &options.view {
                if !r.view.eq_ignore_ascii_case(v) {
                    filtered += 1;
                    continue;
                }
            }
            let found = if options.labels_only { Some(folder.join(&r.image)) } else { images.get(&r.image).cloned() };
            match found {
                Some(path) => records.push(FileRecord {
                    id: r.image,
                    path,
                    labels: r.labels,
                    patient: Some(r.patient),
                    view: Some(r.view),
                }),
                None => missing.push(r.image),
            }
        }
        if !missing.is_empty() && !options.skip_missing {
            return Err(Error::data(
                &name,
                format!(
                    "{} (pass skip_missing / --skip-missing to drop them)",
                    missing_summary(&missing, &folder.display().to_string())
                ),
            ));
        }
        let mut data = FileDataset::new(format!("nih:{}", file_identity(&label_file)), records);
        if let Some(bbox) = find_file(folder, "BBox_List_2017.csv") {
            let boxes = parse_bbox_list(open_maybe_gz(&bbox)?, &bbox.display().to_string())?;
            data.set_boxes(&boxes, (1024, 1024));
        }
        let by_name: HashMap<&str, usize> = (0..data.len()).map(|i| (data.image_id(i), i)).collect();
        let indices = |names: Vec<String>| -> Vec<usize> {
            let mut v: Vec<usize> = names.iter().filter_map(|n| by_name.get(n.as_str()).copied()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let official = if let (Some(tr), Some(va), Some(te)) = (
            find_file(folder, "split_train_list.txt"),
            find_file(folder, "split_val_list.txt"),
            find_file(folder, "split_test_list.txt"),
        ) {
            Some(OfficialSplit::ThreeWay(Split {
                train: indices(read_list(&tr)?),
                val: indices(read_list(&va)?),
                test: indices(read_list(&te)?),
            }))
        } else if let (Some(tv), Some(te)) =
            (find_file(folder, "train_val_list.txt"), find_file(folder, "test_list.txt"))
        {
            Some(OfficialSplit::TrainValTest { train_val: indices(read_list(&tv)?), test: indices(read_list(&te)?) })
        } else {
            None
        };
        Ok(Nih { folder: folder.to_path_buf(), label_file, data, missing, filtered_by_view: filtered, official })
    }

    /// Train/val/test indices: the official lists when present (the official train_val list is
    /// split by patient into train and val with the ratio of `fractions`), else a seeded
    /// patient-level split with `fractions`.
    pub fn split(&self, fractions: Fractions, seed: u64) -> Result<Split> {
        match &self.official {
            Some(OfficialSplit::ThreeWay(s)) => Ok(s.clone()),
            Some(OfficialSplit::TrainValTest { train_val, test }) => {
                let tv = fractions.train + fractions.val;
                let inner = if tv > 0.0 {
                    Fractions { train: fractions.train / tv, val: fractions.val / tv, test: 0.0 }
                } else {
                    Fractions { train: 1.0, val: 0.0, test: 0.0 }
                };
                let s = patient_split_of(&self.data, train_val, inner, seed)?;
                Ok(Split { train: s.train, val: s.val, test: test.clone() })
            }
            None => patient_split(&self.data, fractions, seed),
        }
    }
}
