//! Metrics against scikit-learn (fixtures from `scripts/metrics_fixtures.py`) and the bootstrap's
//! properties.
//!
//! Tolerances: AUROC and AP agree with sklearn to 1e-12 (both sum in f64, in different orders);
//! ROC rates to 1e-15 (the same integer ratios); ROC and Youden thresholds exactly (the same
//! float32 scores); confusion counts exactly; precision/recall/F1/hamming/subset to 1e-12.
//!
//! serde_json's default float parser may land one ulp off the double Python wrote, so values the
//! fixture holds as float32 (scores, thresholds) are rounded to f32 after parsing: that recovers
//! them exactly.

use cxr::metrics::bootstrap::{clusters_from_patients, resample_weights};
use cxr::metrics::report::youden_thresholds;
use cxr::metrics::{
    auroc, average_precision, bootstrap_auroc, evaluate, roc_curve, threshold_metrics, youden, BootstrapOptions,
    EvalInput, ResampleUnit, RocCurve, ThresholdChoice,
};
use cxr::tensor::init::Rng;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture exists")).expect("fixture parses")
}

struct Case {
    name: String,
    classes: usize,
    scores: Vec<f32>,
    labels: Vec<f32>,
    json: Value,
}

fn cases() -> Vec<Case> {
    fixture()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().into(),
            classes: c["classes"].as_u64().unwrap() as usize,
            // The fixture holds float32 values written as doubles: the cast is exact.
            scores: c["scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            labels: c["labels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            json: c.clone(),
        })
        .collect()
}

impl Case {
    fn column(&self, m: &[f32], c: usize) -> Vec<f32> {
        m.iter().skip(c).step_by(self.classes).copied().collect()
    }
    fn names(&self) -> Vec<String> {
        (0..self.classes).map(|c| format!("class{c}")).collect()
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::INFINITY)).collect()
}

/// Values that are float32 numbers written as doubles, recovered exactly (see the header).
fn f32_values(v: &Value) -> Vec<f64> {
    floats(v).into_iter().map(|x| x as f32 as f64).collect()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs sklearn {b}");
}

fn same_curve(got: &RocCurve, want: &Value, what: &str) {
    let (fpr, tpr, thr) = (floats(&want["fpr"]), floats(&want["tpr"]), f32_values(&want["thresholds"]));
    assert_eq!(got.fpr.len(), fpr.len(), "{what}: point count");
    for i in 0..fpr.len() {
        close(got.fpr[i], fpr[i], 1e-15, what);
        close(got.tpr[i], tpr[i], 1e-15, what);
        // null in the fixture is sklearn's +inf first threshold.
        assert_eq!(got.thresholds[i], thr[i], "{what}: threshold {i}");
    }
}

#[test]
fn auroc_and_average_precision_match_sklearn() {
    for case in cases() {
        for c in 0..case.classes {
            let (s, l) = (case.column(&case.scores, c), case.column(&case.labels, c));
            let want = &case.json["per_class"][c];
            let what = format!("{} class {c}", case.name);
            match want["auroc"].as_f64() {
                Some(a) => close(auroc(&s, &l).expect("defined"), a, 1e-12, &what),
                None => assert_eq!(auroc(&s, &l), None, "{what}"),
            }
            match want["average_precision"].as_f64() {
                Some(a) => close(average_precision(&s, &l).expect("defined"), a, 1e-12, &what),
                None => assert_eq!(average_precision(&s, &l), None, "{what}"),
            }
        }
    }
}

#[test]
fn roc_points_and_youden_match_sklearn() {
    let mut checked = 0;
    for case in cases() {
        for c in 0..case.classes {
            let (s, l) = (case.column(&case.scores, c), case.column(&case.labels, c));
            let want = &case.json["per_class"][c];
            let what = format!("{} class {c}", case.name);
            if want["auroc"].is_null() {
                assert!(roc_curve(&s, &l, false).is_none(), "{what}");
                continue;
            }
            let full = roc_curve(&s, &l, false).unwrap();
            same_curve(&full, &want["roc_full"], &what);
            let dropped = roc_curve(&s, &l, true).unwrap();
            same_curve(&dropped, &want["roc_dropped"], &format!("{what} (drop_intermediate)"));
            let (y, yd) = (youden(&full), youden(&dropped));
            assert_eq!(y.index as u64, want["youden"]["index"].as_u64().unwrap(), "{what}");
            let threshold = want["youden"]["threshold"].as_f64().map_or(f64::INFINITY, |t| t as f32 as f64);
            assert_eq!(y.threshold, threshold, "{what}");
            assert_eq!((yd.threshold, yd.tpr, yd.fpr), (y.threshold, y.tpr, y.fpr), "{what}: dropped curve");
            close(y.tpr, want["youden"]["tpr"].as_f64().unwrap(), 1e-15, &what);
            close(y.fpr, want["youden"]["fpr"].as_f64().unwrap(), 1e-15, &what);
            checked += 1;
        }
    }
    assert_eq!(checked, 11, "classes with both labels across the fixture cases");
}

#[test]
fn backwards_class_has_an_infinite_youden_threshold_and_is_refused() {
    let case = &cases()[0];
    let (s, l) = (case.column(&case.scores, 3), case.column(&case.labels, 3));
    assert_eq!(auroc(&s, &l), Some(0.0));
    assert_eq!(youden(&roc_curve(&s, &l, false).unwrap()).threshold, f64::INFINITY);
    let names = case.names();
    let points: Vec<_> = (0..case.classes)
        .map(|c| roc_curve(&case.column(&case.scores, c), &case.column(&case.labels, c), false).map(|r| youden(&r)))
        .collect();
    let err = youden_thresholds(&names, &points).unwrap_err().to_string();
    assert!(err.contains("class1, class2, class3") && !err.contains("class0") && !err.contains("class4"), "{err}");
}

fn check_decisions(case: &Case, key: &str) {
    let want = &case.json[key];
    let thresholds = f32_values(&want["thresholds"]);
    let m = threshold_metrics(&case.scores, &case.labels, case.classes, &thresholds).unwrap();
    for c in 0..case.classes {
        let what = format!("{} {key} class {c}", case.name);
        let cm = &want["confusion"][c];
        let counts = (cm["tp"].as_u64(), cm["fp"].as_u64(), cm["tn"].as_u64(), cm["fn"].as_u64());
        let k = m.confusion[c];
        assert_eq!(counts, (Some(k.tp), Some(k.fp), Some(k.tn), Some(k.fn_)), "{what}");
        close(k.precision(), want["precision"][c].as_f64().unwrap(), 1e-12, &what);
        close(k.recall(), want["recall"][c].as_f64().unwrap(), 1e-12, &what);
        close(k.f1(), want["f1"][c].as_f64().unwrap(), 1e-12, &what);
        assert_eq!(k.support(), want["support"][c].as_u64().unwrap(), "{what}");
    }
    close(m.hamming_loss, want["hamming_loss"].as_f64().unwrap(), 1e-12, &case.name);
    close(m.subset_accuracy, want["subset_accuracy"].as_f64().unwrap(), 1e-12, &case.name);
    close(m.label_wise_accuracy, 1.0 - want["hamming_loss"].as_f64().unwrap(), 1e-12, &case.name);
}

#[test]
fn threshold_metrics_match_sklearn() {
    for case in cases() {
        check_decisions(&case, "at_half");
        check_decisions(&case, "at_list");
    }
}

#[test]
fn label_wise_accuracy_by_hand() {
    // 2 images x 3 classes at 0.5: decisions (1,0,1) vs truth (1,1,1); (0,0,0) vs (0,1,0).
    let m = threshold_metrics(&[0.9, 0.1, 0.6, 0.2, 0.3, 0.4], &[1.0, 1.0, 1.0, 0.0, 1.0, 0.0], 3, &[0.5; 3]).unwrap();
    assert_eq!(m.label_wise_accuracy, 4.0 / 6.0);
    assert_eq!(m.hamming_loss, 2.0 / 6.0);
    assert_eq!(m.subset_accuracy, 0.0);
    assert_eq!(m.confusion[1].specificity(), 0.0); // no negatives: 0 by sklearn's convention
    assert_eq!(m.confusion[1].recall(), 0.0);
    assert_eq!(m.confusion[0].specificity(), 1.0);
    assert_eq!(m.confusion[2].precision(), 1.0);
}

#[test]
fn report_gathers_the_sklearn_numbers() {
    let case = &cases()[2];
    let names = case.names();
    let patients = vec![None; case.scores.len() / case.classes];
    let input = EvalInput { scores: &case.scores, labels: &case.labels, names: &names, patients: &patients };
    let opts = BootstrapOptions { resamples: 200, seed: 7, confidence: 0.95 };
    let report = evaluate(&input, &ThresholdChoice::Fixed(0.5), &opts).unwrap();
    assert_eq!(report.images, 400);
    assert_eq!(report.patients, None);
    assert_eq!(report.bootstrap.as_ref().unwrap().unit, ResampleUnit::Image);
    let sk: Vec<Option<f64>> = (0..case.classes).map(|c| case.json["per_class"][c]["auroc"].as_f64()).collect();
    let defined: Vec<f64> = sk.iter().flatten().copied().collect();
    close(report.mean_auroc.unwrap(), defined.iter().sum::<f64>() / defined.len() as f64, 1e-12, "mean");
    assert_eq!(report.mean_auroc_classes, 5);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!((report.skipped[0].name.as_str(), report.skipped[0].reason.as_str()), ("class1", "no positive images"));
    close(report.hamming_loss, case.json["at_half"]["hamming_loss"].as_f64().unwrap(), 1e-12, "hamming");
    for (c, r) in report.classes.iter().enumerate() {
        assert_eq!(r.auroc.is_some(), sk[c].is_some());
        if let (Some(a), Some(ci)) = (r.auroc, r.auroc_ci) {
            assert!(ci.lower < a && a < ci.upper, "class {c}: {a} outside {ci:?}");
        }
        assert_eq!(r.threshold, 0.5);
    }
    let ci = report.mean_auroc_ci.unwrap();
    assert!(ci.lower < report.mean_auroc.unwrap() && report.mean_auroc.unwrap() < ci.upper);
    // Youden thresholds on this case are refused: class1 has no positives.
    let err = evaluate(&input, &ThresholdChoice::Youden, &opts).unwrap_err().to_string();
    assert!(err.contains("no Youden threshold for class1"), "{err}");
    // The JSON round-trips.
    let json = serde_json::to_string(&report).unwrap();
    let back: cxr::metrics::EvalReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.classes[0].confusion, report.classes[0].confusion);
    assert_eq!(back.classes[0].roc.as_ref().unwrap().thresholds[0], f64::INFINITY, "+inf survives as null");
    assert!(json.contains("\"thresholds\":[null,"), "first ROC threshold written as null");
}

#[test]
fn threshold_choice_parsing() {
    assert_eq!(ThresholdChoice::parse("0.5", 14).unwrap(), ThresholdChoice::Fixed(0.5));
    assert_eq!(ThresholdChoice::parse("YOUDEN", 14).unwrap(), ThresholdChoice::Youden);
    assert_eq!(ThresholdChoice::parse("0.2, 0.3", 2).unwrap(), ThresholdChoice::PerClass(vec![0.2, 0.3]));
    for (text, needle) in [
        ("1.5", "outside (0, 1)"),
        ("0", "outside (0, 1)"),
        ("0.2,0.3", "expected 1 or one per class (14)"),
        ("high", "not `youden`"),
    ] {
        let err = ThresholdChoice::parse(text, 14).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

// ---- bootstrap -----------------------------------------------------------------------------------

/// `rows` images with a weakly informative score for `classes` classes.
fn synthetic(rows: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let labels: Vec<f32> = (0..rows * classes).map(|_| f32::from(rng.uniform() < 0.3)).collect();
    let scores = labels.iter().map(|&l| (0.6 * rng.uniform() + 0.3 * l as f64) as f32).collect();
    (scores, labels)
}

#[test]
fn bootstrap_is_deterministic_per_seed_and_brackets_the_estimate() {
    let (scores, labels) = synthetic(300, 3, 1);
    let clusters: Vec<usize> = (0..300).collect();
    let run = |seed| {
        let opts = BootstrapOptions { resamples: 500, seed, confidence: 0.95 };
        bootstrap_auroc(&scores, &labels, 3, (&clusters, 300, ResampleUnit::Image), &[0, 1, 2], &opts).unwrap()
    };
    let (a, b, other) = (run(5), run(5), run(6));
    assert_eq!(a, b);
    assert_ne!(a.per_class[0].ci, other.per_class[0].ci);
    for c in 0..3 {
        let column: Vec<f32> = scores.iter().skip(c).step_by(3).copied().collect();
        let truth: Vec<f32> = labels.iter().skip(c).step_by(3).copied().collect();
        let point = auroc(&column, &truth).unwrap();
        let ci = a.per_class[c].ci.unwrap();
        assert!(ci.lower < point && point < ci.upper, "{point} outside {ci:?}");
        // Standard error of an AUROC near 0.8 on ~90 positives / 210 negatives is about 0.03:
        // a 95% interval some 0.1 wide, not 0.01 or 0.5.
        assert!((0.05..0.2).contains(&(ci.upper - ci.lower)), "{ci:?}");
        assert_eq!(a.per_class[c].skipped, 0);
    }
}

#[test]
fn patient_resampling_keeps_whole_patients() {
    let patients: Vec<Option<String>> = (0..50).map(|i| Some(format!("p{}", i / 5))).collect();
    let keys: Vec<Option<&str>> = patients.iter().map(|p| p.as_deref()).collect();
    let (clusters, count, unit) = clusters_from_patients(&keys);
    assert_eq!((count, unit), (10, ResampleUnit::Patient));
    let mut rng = Rng::new(3);
    for _ in 0..20 {
        let w = resample_weights(&clusters, count, &mut rng);
        assert_eq!(w.iter().sum::<u32>(), 50, "10 patients of 5 images drawn");
        for p in w.chunks(5) {
            assert!(p.iter().all(|&x| x == p[0]), "a patient split apart: {p:?}");
        }
    }
}

#[test]
fn patient_bootstrap_of_duplicated_images_equals_the_image_bootstrap_of_one_copy() {
    // 120 patients with 6 identical images each: resampling patients is the bootstrap of the 120
    // distinct images (same draws, AUROC is scale-free in the weights); resampling the 720 images
    // as if independent understates the uncertainty.
    let (scores, labels) = synthetic(120, 2, 9);
    let copies = 6;
    let dup = |m: &[f32]| {
        m.chunks(2).flat_map(|row| std::iter::repeat_n(row, copies).flatten().copied()).collect::<Vec<f32>>()
    };
    let (dup_scores, dup_labels) = (dup(&scores), dup(&labels));
    let opts = BootstrapOptions { resamples: 400, seed: 11, confidence: 0.95 };
    let patient_of: Vec<usize> = (0..720).map(|i| i / copies).collect();
    let by_patient =
        bootstrap_auroc(&dup_scores, &dup_labels, 2, (&patient_of, 120, ResampleUnit::Patient), &[0, 1], &opts)
            .unwrap();
    let one_copy: Vec<usize> = (0..120).collect();
    let reference =
        bootstrap_auroc(&scores, &labels, 2, (&one_copy, 120, ResampleUnit::Image), &[0, 1], &opts).unwrap();
    for c in 0..2 {
        let (a, b) = (by_patient.per_class[c].ci.unwrap(), reference.per_class[c].ci.unwrap());
        close(a.lower, b.lower, 1e-12, "lower");
        close(a.upper, b.upper, 1e-12, "upper");
    }
    let every_image: Vec<usize> = (0..720).collect();
    let naive =
        bootstrap_auroc(&dup_scores, &dup_labels, 2, (&every_image, 720, ResampleUnit::Image), &[0, 1], &opts).unwrap();
    let width = |b: &cxr::metrics::AurocBootstrap| b.mean.ci.map(|i| i.upper - i.lower).unwrap();
    assert!(width(&naive) < 0.6 * width(&by_patient), "{} vs {}", width(&naive), width(&by_patient));
}

#[test]
fn resamples_without_positives_are_skipped_and_counted() {
    // One positive in 50 images: a resample misses it with probability (49/50)^50 = 0.364.
    let mut labels = vec![0.0f32; 50];
    labels[7] = 1.0;
    let scores: Vec<f32> = (0..50).map(|i| i as f32 / 50.0).collect();
    let clusters: Vec<usize> = (0..50).collect();
    let opts = BootstrapOptions { resamples: 1000, seed: 2, confidence: 0.95 };
    let b = bootstrap_auroc(&scores, &labels, 1, (&clusters, 50, ResampleUnit::Image), &[0], &opts).unwrap();
    assert!((300..430).contains(&b.per_class[0].skipped), "{}", b.per_class[0].skipped);
    assert_eq!(b.mean.skipped, b.per_class[0].skipped);
    assert!(b.per_class[0].ci.is_some());
    let bad = BootstrapOptions { confidence: 1.0, ..opts };
    assert!(bootstrap_auroc(&scores, &labels, 1, (&clusters, 50, ResampleUnit::Image), &[0], &bad).is_err());
}
