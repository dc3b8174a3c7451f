//! Data sources: MedMNIST npz, NIH label files and folders, the generic CSV source, patient-level
//! splits and the leakage check, statistics. Tests that need `../shared/data` skip with a message
//! when it is absent.

use cxr::data::medmnist::{npz_keys, MedMnist, MedMnistOptions};
use cxr::data::nih::{parse_data_entry, parse_findings, Nih, NihOptions};
use cxr::data::npy::write_header;
use cxr::data::split::{check_leakage, patient_split, Fractions, Split};
use cxr::data::{
    open_source, CsvOptions, CsvSource, Dataset, Normalization, Preprocess, SourceKind, SourceOptions, Stats, FINDINGS,
};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.join("README.md").is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: shared data not found at {} (real NIH data for tests)", p.display());
        None
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxr-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An .npy array: header + raw bytes.
fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let mut v = write_header(descr, shape);
    v.extend_from_slice(data);
    v
}

fn write_npz(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        z.start_file(format!("{name}.npy"), opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

/// A valid small npz: 3 train images 4x4, 2 val, 1 test; labels with width `width`.
fn small_npz_entries(width: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut e = Vec::new();
    for (split, n) in [("train", 3usize), ("val", 2), ("test", 1)] {
        let imgs: Vec<u8> = (0..n * 16).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n * width).map(|i| (i % 3 == 0) as u8).collect();
        let ik: &'static str = Box::leak(format!("{split}_images").into_boxed_str());
        let lk: &'static str = Box::leak(format!("{split}_labels").into_boxed_str());
        e.push((ik, npy("|u1", &[n, 4, 4], &imgs)));
        e.push((lk, npy("|u1", &[n, width], &labels)));
    }
    e
}

// ---- MedMNIST npz --------------------------------------------------------------------------------

/// Reads array `key` from the npz without the library's parser: header length from bytes 8..10.
fn raw_array(path: &Path, key: &str) -> Vec<u8> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut bytes = Vec::new();
    z.by_name(&format!("{key}.npy")).unwrap().read_to_end(&mut bytes).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + hl..].to_vec()
}

#[test]
fn chestmnist_like_npz_counts_and_labels() {
    let Some(dir) = shared() else { return };
    let path = dir.join("chestmnist_like.npz");
    let keys = npz_keys(&path).unwrap();
    assert_eq!(keys, ["test_images", "test_labels", "train_images", "train_labels", "val_images", "val_labels"]);
    let [tr, va, te] = MedMnist::open_splits(&path, &MedMnistOptions::default()).unwrap();
    assert_eq!((tr.len(), va.len(), te.len()), (725, 94, 598));
    for ds in [&tr, &va, &te] {
        let raw = raw_array(&path, &format!("{}_labels", ds.split()));
        assert_eq!(raw.len(), ds.len() * 14);
        for c in 0..14 {
            let expect: usize = raw.iter().skip(c).step_by(14).map(|&v| v as usize).sum();
            let got: f32 = (0..ds.len()).map(|i| ds.labels(i)[c]).sum();
            assert_eq!(got as usize, expect, "{} finding {c}", ds.split());
        }
        assert!(ds.patient(0).is_none());
    }
    assert_eq!(te.image_id(5), "test:5");
    // Pixels are the raw uint8 / 255 at the native size.
    let raw = raw_array(&path, "train_images");
    let pre = Preprocess { channels: 1, size: 28, normalization: Normalization::UnitRange };
    let img = tr.image(3, &pre, None).unwrap();
    assert_eq!(img.len(), 28 * 28);
    for (a, &b) in img.iter().zip(&raw[3 * 784..4 * 784]) {
        assert!((a - b as f32 / 255.0).abs() < 1e-6);
    }
    // Upsampled to 64 with 3 channels.
    let pre3 = Preprocess { channels: 3, size: 64, normalization: Normalization::ImageNet };
    assert_eq!(tr.image(0, &pre3, None).unwrap().len(), 3 * 64 * 64);
}

#[test]
fn npz_memory_mapped_cache_matches_memory() {
    let dir = temp_dir("npzmap");
    let path = dir.join("small.npz");
    write_npz(&path, &small_npz_entries(14));
    let mem = MedMnist::open(&path, "train", &MedMnistOptions::default()).unwrap();
    let opts = MedMnistOptions { in_memory_max_pixels: 0, cache_dir: Some(dir.join("cache")), ..Default::default() };
    let mapped = MedMnist::open(&path, "train", &opts).unwrap();
    assert!(!mem.is_mapped() && mapped.is_mapped());
    for i in 0..3 {
        assert_eq!(mem.raw(i), mapped.raw(i));
        assert_eq!(mem.labels(i), mapped.labels(i));
    }
    // Reopening reuses the extracted file.
    let again = MedMnist::open(&path, "train", &opts).unwrap();
    assert_eq!(again.raw(2), mem.raw(2));
    assert_eq!(std::fs::read_dir(dir.join("cache")).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn npz_error(
    name: &str,
    entries: Option<Vec<(&str, Vec<u8>)>>,
    raw: Option<Vec<u8>>,
    opts: &MedMnistOptions,
) -> String {
    let dir = temp_dir(&format!("npzerr-{name}"));
    let path = dir.join(format!("{name}.npz"));
    match (entries, raw) {
        (Some(e), _) => write_npz(&path, &e),
        (None, Some(r)) => std::fs::write(&path, r).unwrap(),
        _ => unreachable!(),
    }
    let err = MedMnist::open(&path, "train", opts).unwrap_err().to_string();
    assert!(err.contains(&format!("{name}.npz")), "error does not name the file: {err}");
    let _ = std::fs::remove_dir_all(&dir);
    err
}

#[test]
fn malformed_npz_errors_name_file_and_key() {
    let def = MedMnistOptions::default();
    // Wrong key.
    let mut e = small_npz_entries(14);
    e.retain(|(k, _)| *k != "train_images");
    e.push(("train_imgs", npy("|u1", &[3, 4, 4], &[0; 48])));
    let err = npz_error("wrongkey", Some(e), None, &def);
    assert!(err.contains("train_images") && err.contains("missing") && err.contains("train_imgs"), "{err}");
    // Float images.
    let mut e = small_npz_entries(14);
    e.retain(|(k, _)| *k != "train_images");
    e.push(("train_images", npy("<f4", &[3, 4, 4], &[0; 192])));
    let err = npz_error("float", Some(e), None, &def);
    assert!(err.contains("train_images") && err.contains("<f4"), "{err}");
    // Image count differs from label count.
    let mut e = small_npz_entries(14);
    e.retain(|(k, _)| *k != "train_images");
    e.push(("train_images", npy("|u1", &[2, 4, 4], &[0; 32])));
    let err = npz_error("mismatch", Some(e), None, &def);
    assert!(err.contains("train_images") && err.contains("shape mismatch"), "{err}");
    // Data shorter than the header's shape.
    let mut e = small_npz_entries(14);
    e.retain(|(k, _)| *k != "train_images");
    e.push(("train_images", npy("|u1", &[3, 4, 4], &[0; 20])));
    let err = npz_error("shortdata", Some(e), None, &def);
    assert!(err.contains("train_images") && err.contains("truncated"), "{err}");
    // Labels of the wrong width for cxr; fine when the caller says so.
    let err = npz_error("width", Some(small_npz_entries(2)), None, &def);
    assert!(err.contains("train_labels") && err.contains("width 2"), "{err}");
    let dir = temp_dir("width-ok");
    write_npz(&dir.join("w.npz"), &small_npz_entries(2));
    let ok =
        MedMnist::open(&dir.join("w.npz"), "train", &MedMnistOptions { label_count: 2, ..Default::default() }).unwrap();
    assert_eq!(ok.labels(0).len(), 2);
    // Truncated zip and not a zip at all.
    let dir2 = temp_dir("trunc");
    write_npz(&dir2.join("full.npz"), &small_npz_entries(14));
    let bytes = std::fs::read(dir2.join("full.npz")).unwrap();
    let err = npz_error("truncated", None, Some(bytes[..bytes.len() / 2].to_vec()), &def);
    assert!(err.contains("zip"), "{err}");
    let err = npz_error("notzip", None, Some(b"hello, not an npz".to_vec()), &def);
    assert!(err.contains("zip"), "{err}");
    for d in [dir, dir2] {
        let _ = std::fs::remove_dir_all(d);
    }
}

// ---- NIH -----------------------------------------------------------------------------------------

#[test]
fn nih_official_csv_head_label_counts() {
    let Some(dir) = shared() else { return };
    let path = dir.join("labels/Data_Entry_2017_v2020.csv.gz");
    let open = || flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap());
    let rows = parse_data_entry(open(), "Data_Entry_2017_v2020.csv.gz", Some(2000)).unwrap();
    assert_eq!(rows.len(), 2000);
    assert_eq!(rows[0].image, "00000001_000.png");
    assert_eq!(rows[0].patient, "1");
    assert_eq!(rows[0].view, "PA");
    assert_eq!(rows[0].line, 2);
    // Independent count from the raw text (field 2 of each line).
    let mut text = String::new();
    open().read_to_string(&mut text).unwrap();
    let mut expect = [0usize; 14];
    let mut normal = 0;
    for line in text.lines().skip(1).take(2000) {
        let f = line.split(',').nth(1).unwrap();
        if f == "No Finding" {
            normal += 1;
        }
        for part in f.split('|') {
            if let Some(k) = FINDINGS.iter().position(|n| *n == part) {
                expect[k] += 1;
            }
        }
    }
    for k in 0..14 {
        let got = rows.iter().filter(|r| r.labels[k] == 1.0).count();
        assert_eq!(got, expect[k], "{}", FINDINGS[k]);
    }
    assert_eq!(rows.iter().filter(|r| r.labels.iter().all(|&v| v == 0.0)).count(), normal);
    assert!(normal > 500 && expect[3] > 100, "implausible counts: normal {normal}, infiltration {}", expect[3]);
}

#[test]
fn nih_csv_errors_name_file_and_line() {
    let head = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n";
    let bad = format!("{head}a.png,Mass,0,1,50,M,PA\nb.png,Mass|Dragon,0,2,50,M,PA\n");
    let err = parse_data_entry(bad.as_bytes(), "entries.csv", None).unwrap_err().to_string();
    assert!(err.contains("entries.csv:3") && err.contains("Dragon") && err.contains("b.png"), "{err}");
    let short = format!("{head}a.png,Mass,0,1,50,M,PA\nb.png,Mass\n");
    let err = parse_data_entry(short.as_bytes(), "entries.csv", None).unwrap_err().to_string();
    assert!(err.contains("entries.csv:3"), "{err}");
    let nocol = "Image Index,Labels,Patient ID,View Position\na.png,Mass,1,PA\n";
    let err = parse_data_entry(nocol.as_bytes(), "entries.csv", None).unwrap_err().to_string();
    assert!(err.contains("Finding Labels"), "{err}");
    assert_eq!(parse_findings("No Finding").unwrap(), [0.0; 14]);
    let l = parse_findings("Effusion|Pleural_Thickening").unwrap();
    assert_eq!((l[2], l[12], l.iter().sum::<f32>()), (1.0, 1.0, 2.0));
}

fn write_png(path: &Path, size: u32, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(size, size, image::Luma([value])).save(path).unwrap();
}

#[test]
fn nih_folder_nested_images_missing_and_official_split() {
    let dir = temp_dir("nihfolder");
    let csv = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n\
        00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n\
        00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,AP,2894,2729,0.143,0.143\n\
        00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.168,0.168\n\
        00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143\n";
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.join("Data_Entry_2017_v2020.csv.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(csv.as_bytes()).unwrap();
    gz.finish().unwrap();
    write_png(&dir.join("images_001/images/00000001_000.png"), 8, 10);
    write_png(&dir.join("images_001/images/00000001_001.png"), 8, 20);
    write_png(&dir.join("images_002/images/00000002_000.png"), 8, 30);
    // 00000003_000.png is missing.
    let err = Nih::open(&dir, &NihOptions::default()).unwrap_err().to_string();
    assert!(err.contains("1 listed image is not found") && err.contains("00000003_000.png"), "{err}");
    let nih = Nih::open(&dir, &NihOptions { skip_missing: true, ..Default::default() }).unwrap();
    assert_eq!(nih.data.len(), 3);
    assert_eq!(nih.missing, vec!["00000003_000.png".to_string()]);
    assert_eq!(nih.data.labels(1)[1], 1.0);
    assert_eq!(nih.data.labels(1)[10], 1.0);
    assert_eq!(nih.data.patient(1), Some("1"));
    let pa =
        Nih::open(&dir, &NihOptions { skip_missing: true, view: Some("PA".into()), ..Default::default() }).unwrap();
    assert_eq!((pa.data.len(), pa.filtered_by_view), (2, 1));
    // Official lists.
    std::fs::write(dir.join("train_val_list.txt"), "00000001_000.png\n00000001_001.png\n00000003_000.png\n").unwrap();
    std::fs::write(dir.join("test_list.txt"), "00000002_000.png\n").unwrap();
    let nih = Nih::open(&dir, &NihOptions { skip_missing: true, ..Default::default() }).unwrap();
    let s = nih.split(Fractions { train: 0.8, val: 0.2, test: 0.0 }, 1).unwrap();
    assert_eq!(s.test, vec![2]);
    let mut tv: Vec<usize> = s.train.iter().chain(&s.val).copied().collect();
    tv.sort();
    assert_eq!(tv, vec![0, 1]);
    // Through open_source.
    let src = open_source(dir.to_str().unwrap(), &SourceOptions { skip_missing: true, ..Default::default() }).unwrap();
    assert!(matches!(src.kind, SourceKind::Nih(_)));
    assert_eq!(src.test.len(), 1);
    assert_eq!(src.warnings.len(), 1, "{:?}", src.warnings);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- CSV source, splits, leakage -----------------------------------------------------------------

#[test]
fn nih64_patient_split_has_no_leakage_and_leaks_are_caught() {
    let Some(dir) = shared() else { return };
    let src = CsvSource::open(&dir.join("nih64/labels.csv"), &CsvOptions::default()).unwrap();
    let ds = &src.data;
    assert_eq!(ds.len(), 1000);
    let split = patient_split(ds, Fractions::default(), 7).unwrap();
    assert_eq!(split.train.len() + split.val.len() + split.test.len(), 1000);
    let patients = |idx: &[usize]| idx.iter().map(|&i| ds.patient(i).unwrap().to_string()).collect::<HashSet<_>>();
    let (a, b, c) = (patients(&split.train), patients(&split.val), patients(&split.test));
    assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
    assert_eq!(a.len() + b.len() + c.len(), 264);
    assert!((a.len() as f64 - 0.7 * 264.0).abs() <= 1.0);
    assert!(check_leakage(ds, &split, false).unwrap().is_clean());
    // Same seed, same split; another seed, another split.
    assert_eq!(patient_split(ds, Fractions::default(), 7).unwrap(), split);
    assert_ne!(patient_split(ds, Fractions::default(), 8).unwrap(), split);
    // Move one image of a multi-image training patient into test.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for &i in &split.train {
        *counts.entry(ds.patient(i).unwrap()).or_default() += 1;
    }
    let &moved = split.train.iter().find(|&&i| counts[ds.patient(i).unwrap()] > 1).unwrap();
    let patient = ds.patient(moved).unwrap().to_string();
    let leaky = Split {
        train: split.train.iter().copied().filter(|&i| i != moved).collect(),
        val: split.val.clone(),
        test: split.test.iter().copied().chain([moved]).collect(),
    };
    let err = check_leakage(ds, &leaky, false).unwrap_err().to_string();
    assert!(err.contains(&format!("patient {patient} (train, test)")) && err.contains("1 patient appear"), "{err}");
    let report = check_leakage(ds, &leaky, true).unwrap();
    assert_eq!(report.leaked.len(), 1);
    assert_eq!(report.leaked_images, counts[patient.as_str()]);
    // The seed notebook's bug: splitting by image instead of patient leaks.
    let by_image = patient_split(
        &cxr::data::Subset::new(std::sync::Arc::new(ImagesOnly(ds.clone())), (0..1000).collect()).unwrap(),
        Fractions::default(),
        7,
    )
    .unwrap();
    assert!(check_leakage(ds, &by_image, false).is_err());
}

/// A dataset that hides patient ids (so splits are per image).
struct ImagesOnly(cxr::data::FileDataset);
impl Dataset for ImagesOnly {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn labels(&self, i: usize) -> &[f32] {
        self.0.labels(i)
    }
    fn patient(&self, _i: usize) -> Option<&str> {
        None
    }
    fn image_id(&self, i: usize) -> &str {
        self.0.image_id(i)
    }
    fn image(&self, i: usize, p: &Preprocess, a: Option<(&cxr::data::Augment, u64)>) -> cxr::Result<Vec<f32>> {
        self.0.image(i, p, a)
    }
}

#[test]
fn csv_source_errors() {
    let dir = temp_dir("csverr");
    let header = format!("image,patient_id,{},view", FINDINGS.join(","));
    let zeros = vec!["0"; 14].join(",");
    write_png(&dir.join("images/a.png"), 4, 1);
    std::fs::write(dir.join("bad.csv"), format!("{header}\na.png,1,{},PA\n", vec!["2"; 14].join(","))).unwrap();
    let err = CsvSource::open(&dir.join("bad.csv"), &CsvOptions::default()).unwrap_err().to_string();
    assert!(err.contains("bad.csv:2") && err.contains("Atelectasis"), "{err}");
    std::fs::write(dir.join("missing.csv"), format!("{header}\na.png,1,{zeros},PA\nb.png,2,{zeros},PA\n")).unwrap();
    let err = CsvSource::open(&dir.join("missing.csv"), &CsvOptions::default()).unwrap_err().to_string();
    assert!(err.contains("b.png") && err.contains("1 listed image"), "{err}");
    let ok =
        CsvSource::open(&dir.join("missing.csv"), &CsvOptions { skip_missing: true, ..Default::default() }).unwrap();
    assert_eq!(ok.data.len(), 1);
    std::fs::write(dir.join("nocol.csv"), "image,patient_id\na.png,1\n").unwrap();
    let err = CsvSource::open(&dir.join("nocol.csv"), &CsvOptions::default()).unwrap_err().to_string();
    assert!(err.contains("Atelectasis") && err.contains("missing column"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- statistics and source detection ------------------------------------------------------------

#[test]
fn nih256_stats() {
    let Some(dir) = shared() else { return };
    let src = open_source(dir.join("nih256").to_str().unwrap(), &SourceOptions::default()).unwrap();
    assert!(matches!(src.kind, SourceKind::Csv(_)));
    let mut stats = Stats::compute(src.all.as_ref());
    assert_eq!(stats.images, 421);
    assert_eq!(stats.patients, Some(421));
    // Independent count from labels.csv.
    let text = std::fs::read_to_string(dir.join("nih256/labels.csv")).unwrap();
    let mut expect = [0usize; 14];
    let mut normal = 0;
    let mut hist = [0usize; 15];
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let l: Vec<usize> = f[2..16].iter().map(|v| v.parse().unwrap()).collect();
        for k in 0..14 {
            expect[k] += l[k];
        }
        let k: usize = l.iter().sum();
        hist[k] += 1;
        normal += (k == 0) as usize;
    }
    for k in 0..14 {
        assert_eq!(stats.findings[k].images, expect[k], "{}", FINDINGS[k]);
        assert_eq!(stats.findings[k].patients, Some(expect[k]), "one image per patient");
    }
    assert_eq!(stats.normal_images, normal);
    assert!(normal > 40 && normal < 110, "about 1 in 6 normal: {normal}");
    assert_eq!(&stats.labels_per_image[..], &hist[..stats.labels_per_image.len()]);
    stats.add_split("train", src.train.as_ref());
    stats.add_split("val", src.val.as_ref());
    stats.add_split("test", src.test.as_ref());
    assert_eq!(stats.splits.iter().map(|s| s.images).sum::<usize>(), 421);
    let table = stats.to_string();
    assert!(
        table.contains("images: 421   patients: 421")
            && table.contains("Pleural_Thickening")
            && table.contains("No Finding")
    );
}

#[test]
fn source_detection() {
    assert!(matches!(cxr::data::source::detect("phantom").unwrap(), SourceKind::Phantom));
    assert!(matches!(cxr::data::source::detect("chestmnist_224").unwrap(), SourceKind::MedMnist(_)));
    let err = cxr::data::source::detect("/nonexistent/thing").unwrap_err().to_string();
    assert!(err.contains("not a data source"), "{err}");
    let src = open_source("phantom:40:32", &SourceOptions::default()).unwrap();
    assert_eq!(src.all.len(), 40);
    assert_eq!(src.train.len() + src.val.len() + src.test.len(), 40);
    let Some(dir) = shared() else { return };
    let src = open_source(dir.join("chestmnist_like.npz").to_str().unwrap(), &SourceOptions::default()).unwrap();
    assert_eq!((src.train.len(), src.val.len(), src.test.len(), src.all.len()), (725, 94, 598, 1417));
    assert_eq!(src.all.image_id(725), "val:0");
}

/// The full official label file with the ChestMNIST-size split lists, labels only: sizes from the
/// data README, and the official split is patient-disjoint (open_source checks leakage).
#[test]
fn nih_full_label_file_official_split() {
    let Some(dir) = shared() else { return };
    let options = SourceOptions { labels_only: true, ..Default::default() };
    let src = open_source(dir.join("labels").to_str().unwrap(), &options).unwrap();
    assert!(matches!(src.kind, SourceKind::Nih(_)));
    let stats = Stats::compute(src.all.as_ref());
    assert_eq!((stats.images, stats.patients), (112_120, Some(30_805)));
    assert_eq!((src.train.len(), src.val.len(), src.test.len()), (78_468, 11_219, 22_433));
    assert!(src.warnings.is_empty(), "{:?}", src.warnings);
    // "No Finding" is the majority, Infiltration the most common finding.
    let max = stats.findings.iter().max_by_key(|f| f.images).unwrap();
    assert_eq!(max.name, "Infiltration");
    assert!(stats.normal_images > 55_000 && stats.normal_images < 65_000, "{}", stats.normal_images);
    // NIH's radiologist boxes are attached (BBox_List_2017.csv.gz in the same folder).
    let i = (0..src.all.len()).find(|&i| src.all.image_id(i) == "00013118_008.png").unwrap();
    let (boxes, size) = src.all.boxes(i);
    assert_eq!(size, (1024, 1024));
    assert!(
        boxes.iter().any(|b| b.finding == 0 && (b.x - 225.08).abs() < 0.01 && (b.w - 86.78).abs() < 0.01),
        "{boxes:?}"
    );
    let total: usize = (0..src.all.len()).map(|i| src.all.boxes(i).0.len()).sum();
    assert_eq!(total, 984);
    // Labels only: decoding fails naming the expected file.
    let pre = Preprocess { channels: 1, size: 8, normalization: Normalization::UnitRange };
    let err = src.all.image(0, &pre, None).unwrap_err().to_string();
    assert!(err.contains("00000001_000.png"), "{err}");
}
