//! Phantoms and the batch loader.

use cxr::data::phantom::{CARDIOMEGALY, EFFUSION, MASS, NODULE};
use cxr::data::{
    Augment, CsvOptions, CsvSource, Dataset, Loader, LoaderOptions, Normalization, Phantoms, Preprocess, FINDINGS,
};
use std::path::PathBuf;
use std::sync::Arc;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxr-dataload-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn unit(size: usize) -> Preprocess {
    Preprocess { channels: 1, size, normalization: Normalization::UnitRange }
}

#[test]
fn phantoms_deterministic_consistent_balanced() {
    let a = Phantoms::new(300, 48, 11);
    let b = Phantoms::new(300, 48, 11);
    let c = Phantoms::new(300, 48, 12);
    assert_eq!(a.image(7, &unit(48), None).unwrap(), b.image(7, &unit(48), None).unwrap());
    assert_ne!(a.image(7, &unit(48), None).unwrap(), c.image(7, &unit(48), None).unwrap());
    let mut counts = [0usize; 14];
    let mut normal = 0;
    for i in 0..a.len() {
        assert_eq!(a.labels(i), b.labels(i));
        assert_eq!(a.patient(i), Some(a.image_id(i)));
        let (boxes, size) = a.boxes(i);
        assert_eq!(size, (48, 48));
        for (k, &l) in a.labels(i).iter().enumerate() {
            counts[k] += l as usize;
            assert_eq!(l == 1.0, boxes.iter().any(|b| b.finding == k), "image {i} finding {k}: label vs boxes");
        }
        normal += a.labels(i).iter().all(|&l| l == 0.0) as usize;
        for bx in boxes {
            assert!(bx.x >= -1.0 && bx.y >= -1.0 && bx.x + bx.w <= 49.0 && bx.y + bx.h <= 49.0, "{bx:?}");
            assert!(bx.w > 1.0 && bx.h > 1.0);
        }
    }
    assert!((110..=190).contains(&normal), "normal {normal} of 300");
    for k in [NODULE, MASS, EFFUSION, CARDIOMEGALY] {
        assert!((35..=110).contains(&counts[k]), "{}: {}", FINDINGS[k], counts[k]);
    }
    assert_eq!(counts.iter().sum::<usize>(), counts[NODULE] + counts[MASS] + counts[EFFUSION] + counts[CARDIOMEGALY]);
}

/// Lesions are visible: the box is brighter than the same box in normal images (a learnable
/// signal), for each finding.
#[test]
fn phantom_findings_are_visible() {
    let n = 200;
    let s = 64;
    let ph = Phantoms::new(n, s, 3);
    let images: Vec<Vec<f32>> = (0..n).map(|i| ph.image(i, &unit(s), None).unwrap()).collect();
    let normals: Vec<usize> = (0..n).filter(|&i| ph.labels(i).iter().all(|&l| l == 0.0)).collect();
    let box_mean = |img: &[f32], b: &cxr::data::LesionBox| {
        let (x0, y0) = (b.x.max(0.0) as usize, b.y.max(0.0) as usize);
        let (x1, y1) = (((b.x + b.w) as usize).min(s), ((b.y + b.h) as usize).min(s));
        let mut sum = 0.0;
        let mut cnt = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += img[y * s + x];
                cnt += 1;
            }
        }
        sum / cnt.max(1) as f32
    };
    for finding in [NODULE, MASS, EFFUSION, CARDIOMEGALY] {
        let mut diffs = Vec::new();
        for i in 0..n {
            for b in ph.boxes(i).0.iter().filter(|b| b.finding == finding) {
                let inside = box_mean(&images[i], b);
                let base = normals.iter().map(|&j| box_mean(&images[j], b)).sum::<f32>() / normals.len() as f32;
                diffs.push(inside - base);
            }
        }
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        assert!(mean > 0.05, "{}: box contrast {mean}", FINDINGS[finding]);
    }
}

#[test]
fn loader_batches_orders_and_prefetch() {
    let ds: Arc<dyn Dataset> = Arc::new(Phantoms::new(50, 32, 1));
    let opts = LoaderOptions { batch_size: 8, shuffle: true, seed: 5, prefetch: 0, ..Default::default() };
    let loader = Loader::new(ds.clone(), unit(32), opts.clone()).unwrap();
    assert_eq!(loader.num_batches(), 7);
    let batches: Vec<_> = loader.epoch(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 7);
    assert_eq!(batches[0].images.dims(), &[8, 1, 32, 32]);
    assert_eq!(batches[0].labels.dims(), &[8, 14]);
    assert_eq!(batches[6].images.dims(), &[2, 1, 32, 32]);
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(seen, (0..50).collect::<Vec<_>>(), "shuffled");
    seen.sort();
    assert_eq!(seen, (0..50).collect::<Vec<_>>(), "every index exactly once");
    // Labels and images belong to the indices.
    let b = &batches[1];
    let labels = b.labels.to_vec().unwrap();
    let images = b.images.to_vec().unwrap();
    for (k, &i) in b.indices.iter().enumerate() {
        assert_eq!(&labels[k * 14..(k + 1) * 14], ds.labels(i));
        assert_eq!(&images[k * 1024..(k + 1) * 1024], &ds.image(i, &unit(32), None).unwrap()[..]);
    }
    // Same seed same order; epochs differ; no shuffle is dataset order.
    assert_eq!(loader.order(0), Loader::new(ds.clone(), unit(32), opts.clone()).unwrap().order(0));
    assert_ne!(loader.order(0), loader.order(1));
    let ordered = Loader::new(ds.clone(), unit(32), LoaderOptions { shuffle: false, ..opts.clone() }).unwrap();
    assert_eq!(ordered.order(3), (0..50).collect::<Vec<_>>());
    // drop_last.
    let dl = Loader::new(ds.clone(), unit(32), LoaderOptions { drop_last: true, ..opts.clone() }).unwrap();
    let n: Vec<usize> = dl.epoch(0).map(|b| b.unwrap().indices.len()).collect();
    assert_eq!(n, vec![8; 6]);
    // Prefetch does not change results, with augmentation.
    let aug = Augment { crop_scale: Some((0.8, 1.0)), rotation_deg: 5.0, hflip: true, brightness: 0.1, contrast: 0.1 };
    let run = |prefetch: usize| -> Vec<Vec<f32>> {
        let o = LoaderOptions { prefetch, augment: Some(aug.clone()), ..opts.clone() };
        let l = Loader::new(ds.clone(), unit(32), o).unwrap();
        l.epoch(2).map(|b| b.unwrap().images.to_vec().unwrap()).collect()
    };
    let sync = run(0);
    assert_eq!(sync, run(1));
    assert_eq!(sync, run(2));
    assert_ne!(
        sync,
        Loader::new(ds.clone(), unit(32), LoaderOptions { augment: Some(aug), prefetch: 0, ..opts.clone() })
            .unwrap()
            .epoch(3)
            .map(|b| b.unwrap().images.to_vec().unwrap())
            .collect::<Vec<_>>()
    );
    // Dropping an epoch early stops the background thread.
    let l = Loader::new(ds.clone(), unit(32), LoaderOptions { prefetch: 2, ..opts.clone() }).unwrap();
    let mut e = l.epoch(0);
    assert!(e.next().unwrap().is_ok());
    drop(e);
    // Bad options.
    assert!(Loader::new(ds.clone(), Preprocess { channels: 2, ..unit(32) }, opts.clone()).is_err());
    assert!(Loader::new(ds, unit(32), LoaderOptions { batch_size: 0, ..opts }).is_err());
}

#[test]
fn loader_cache_reproduces_and_is_reused() {
    let dir = temp_dir("cache");
    let ds: Arc<dyn Dataset> = Arc::new(Phantoms::new(12, 40, 2));
    let pre = Preprocess { channels: 3, size: 24, normalization: Normalization::ImageNet };
    let aug = Augment { rotation_deg: 8.0, ..Default::default() };
    let opts = LoaderOptions {
        batch_size: 5,
        shuffle: true,
        seed: 1,
        augment: Some(aug),
        cache_dir: Some(dir.clone()),
        ..Default::default()
    };
    let l = Loader::new(ds.clone(), pre.clone(), opts.clone()).unwrap();
    let first: Vec<Vec<f32>> = l.epoch(0).map(|b| b.unwrap().images.to_vec().unwrap()).collect();
    let sub = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let files =
        std::fs::read_dir(&sub).unwrap().filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "u8").count();
    assert_eq!(files, 12);
    let again: Vec<Vec<f32>> = l.epoch(0).map(|b| b.unwrap().images.to_vec().unwrap()).collect();
    assert_eq!(first, again);
    // Cached uint8 pixels are within rounding of the uncached pipeline.
    let plain = Loader::new(ds, pre, LoaderOptions { cache_dir: None, ..opts }).unwrap();
    let direct: Vec<Vec<f32>> = plain.epoch(0).map(|b| b.unwrap().images.to_vec().unwrap()).collect();
    for (a, b) in first.iter().flatten().zip(direct.iter().flatten()) {
        assert!((a - b).abs() < 0.03, "{a} vs {b}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loader_corrupt_image_with_and_without_skip() {
    let dir = temp_dir("corrupt");
    let header = format!("image,patient_id,{},view", FINDINGS.join(","));
    let zeros = vec!["0"; 14].join(",");
    let mut csv = header;
    for i in 0..5 {
        let name = format!("img{i}.png");
        if i == 3 {
            std::fs::write(dir.join(&name), b"not a png").unwrap();
        } else {
            image::GrayImage::from_pixel(16, 16, image::Luma([i as u8 * 40])).save(dir.join(&name)).unwrap();
        }
        csv.push_str(&format!("\n{name},{i},{zeros},PA"));
    }
    std::fs::write(dir.join("labels.csv"), csv).unwrap();
    let src = CsvSource::open(&dir.join("labels.csv"), &CsvOptions::default()).unwrap();
    let ds: Arc<dyn Dataset> = Arc::new(src.data);
    let opts = LoaderOptions { batch_size: 2, ..Default::default() };
    let l = Loader::new(ds.clone(), unit(8), opts.clone()).unwrap();
    let results: Vec<_> = l.epoch(0).collect();
    assert_eq!(results.len(), 2, "stops after the error");
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("img3.png"), "{err}");
    let l = Loader::new(ds, unit(8), LoaderOptions { skip_corrupt: true, ..opts }).unwrap();
    let batches: Vec<_> = l.epoch(0).collect::<Result<_, _>>().unwrap();
    let n: Vec<usize> = batches.iter().map(|b| b.indices.len()).collect();
    assert_eq!(n, vec![2, 1, 1]);
    assert_eq!(batches[1].images.dims(), &[1, 1, 8, 8]);
    assert_eq!(batches[1].skipped.len(), 1);
    assert_eq!(batches[1].skipped[0].image, "img3.png");
    assert!(batches[1].skipped[0].error.contains("img3.png"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// AUROC by the rank-sum formula (ties count half).
fn auroc(scores: &[f32], labels: &[bool]) -> f64 {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (&s, &l) in scores.iter().zip(labels) {
        if l {
            pos.push(s)
        } else {
            neg.push(s)
        }
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()).max(1) as f64
}

/// Learnable: even a linear model on 24x24 pixels (a lower bound for a CNN), trained for a few
/// epochs of plain gradient descent, separates each finding on held-out phantoms.
#[test]
fn phantoms_are_learnable_by_a_linear_model() {
    let s = 24;
    let ph = Phantoms::new(600, 64, 21);
    let x: Vec<Vec<f32>> = (0..600).map(|i| ph.image(i, &unit(s), None).unwrap()).collect();
    let (train, test) = (0..450, 450..600);
    let d = s * s;
    let mean: Vec<f32> = (0..d).map(|j| train.clone().map(|i| x[i][j]).sum::<f32>() / 450.0).collect();
    for finding in [NODULE, MASS, EFFUSION, CARDIOMEGALY] {
        let y: Vec<f32> = (0..600).map(|i| ph.labels(i)[finding]).collect();
        let (mut w, mut b) = (vec![0f32; d], 0f32);
        for _ in 0..60 {
            let mut gw = vec![0f32; d];
            let mut gb = 0.0;
            for i in train.clone() {
                let z: f32 = b + (0..d).map(|j| w[j] * (x[i][j] - mean[j])).sum::<f32>();
                let g = 1.0 / (1.0 + (-z).exp()) - y[i];
                gb += g;
                for j in 0..d {
                    gw[j] += g * (x[i][j] - mean[j]);
                }
            }
            b -= 0.5 * gb / 450.0;
            for j in 0..d {
                w[j] -= 2.0 * gw[j] / 450.0;
            }
        }
        let scores: Vec<f32> = test.clone().map(|i| (0..d).map(|j| w[j] * (x[i][j] - mean[j])).sum()).collect();
        let labels: Vec<bool> = test.clone().map(|i| y[i] > 0.5).collect();
        let a = auroc(&scores, &labels);
        println!("{}: held-out AUROC {a:.3}", FINDINGS[finding]);
        assert!(a > 0.7, "{}: AUROC {a}", FINDINGS[finding]);
    }
}
