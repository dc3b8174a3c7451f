//! Decoding, resizing, normalisation and augmentation.

use cxr::data::transform::{augment, decode_image, load_image, normalize, preprocess, resize_crop, Grey};
use cxr::data::{Augment, Normalization, Preprocess};
use std::path::{Path, PathBuf};

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if p.join("README.md").is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: shared data not found at {}", p.display());
        None
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxr-datatf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn pre(channels: usize, size: usize, normalization: Normalization) -> Preprocess {
    Preprocess { channels, size, normalization }
}

#[test]
fn decodes_real_png_and_resizes() {
    let Some(dir) = shared() else { return };
    let img = load_image(&dir.join("nih256/images/00000075_000.png")).unwrap();
    assert_eq!((img.width, img.height), (256, 256));
    let (min, max) = img.data.iter().fold((1f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(min >= 0.0 && max <= 1.0 && max - min > 0.5, "range {min}..{max}");
    let out = preprocess(&img, &pre(3, 224, Normalization::ImageNet), None).unwrap();
    assert_eq!(out.len(), 3 * 224 * 224);
    // Channels are the same grey image under different mean/std.
    let (r, g) = (out[1000], out[224 * 224 + 1000]);
    assert!(((r * 0.229 + 0.485) - (g * 0.224 + 0.456)).abs() < 1e-5);
    // Mean brightness survives downscaling.
    let small = resize_crop(&img, 64);
    let m1 = img.data.iter().sum::<f32>() / img.data.len() as f32;
    let m2 = small.data.iter().sum::<f32>() / small.data.len() as f32;
    assert!((m1 - m2).abs() < 0.01, "{m1} vs {m2}");
}

#[test]
fn resize_shorter_side_then_center_crop() {
    // 40 wide, 20 high: left half 0, right half 1 -> shorter side 10, width 20, crop the middle 10.
    let data: Vec<f32> = (0..20 * 40).map(|i| if i % 40 < 20 { 0.0 } else { 1.0 }).collect();
    let img = Grey { width: 40, height: 20, data };
    let out = resize_crop(&img, 10);
    assert_eq!((out.width, out.height, out.data.len()), (10, 10, 100));
    assert!(out.data[0] < 0.01 && out.data[9] > 0.99, "{:?}", &out.data[..10]);
    // Constant stays constant (weights sum to one), also when upsampling.
    let c = Grey { width: 30, height: 50, data: vec![0.25; 1500] };
    for s in [7, 30, 96] {
        assert!(resize_crop(&c, s).data.iter().all(|&v| (v - 0.25).abs() < 1e-5));
    }
    // Antialiasing: a one-pixel checkerboard shrunk by 4.25 averages to grey, not moire.
    let cb: Vec<f32> = (0..68 * 68).map(|i| ((i % 68 + i / 68) % 2) as f32).collect();
    let out = resize_crop(&Grey { width: 68, height: 68, data: cb }, 16);
    assert!(out.data.iter().all(|&v| (v - 0.5).abs() < 0.1), "aliasing: {:?}", &out.data[..16]);
}

#[test]
fn normalisations_on_constant_image() {
    let v = 128.0 / 255.0;
    let img = Grey { width: 4, height: 4, data: vec![v; 16] };
    let out = normalize(&img, 3, Normalization::ImageNet);
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    for c in 0..3 {
        for &x in &out[c * 16..(c + 1) * 16] {
            assert!((x - (v - mean[c]) / std[c]).abs() < 1e-5);
        }
    }
    assert!((out[0] - 0.0741).abs() < 1e-3 && (out[16] - 0.2052).abs() < 1e-3 && (out[32] - 0.4265).abs() < 1e-3);
    assert_eq!(normalize(&img, 1, Normalization::UnitRange), vec![v; 16]);
    let unit3 = normalize(&img, 3, Normalization::UnitRange);
    assert_eq!(unit3.len(), 48);
    // XrayVision: [0, 1] -> [-1024, 1024].
    let ramp = Grey { width: 3, height: 1, data: vec![0.0, 0.5, 1.0] };
    assert_eq!(normalize(&ramp, 1, Normalization::XrayVision), vec![-1024.0, 0.0, 1024.0]);
    // Preprocess checks.
    let err = preprocess(&img, &pre(2, 4, Normalization::UnitRange), None).unwrap_err().to_string();
    assert!(err.contains("channels must be 1 or 3"), "{err}");
    let err = preprocess(&img, &pre(3, 4, Normalization::XrayVision), None).unwrap_err().to_string();
    assert!(err.contains("XrayVision"), "{err}");
}

#[test]
fn augmentation_is_seeded() {
    let data: Vec<f32> = (0..48 * 48).map(|i| ((i % 48) as f32 / 47.0 + (i / 48) as f32 / 94.0).min(1.0)).collect();
    let img = Grey { width: 48, height: 48, data };
    let aug = Augment { crop_scale: Some((0.7, 1.0)), rotation_deg: 10.0, hflip: true, brightness: 0.1, contrast: 0.1 };
    let a = augment(&img, &aug, 42);
    let b = augment(&img, &aug, 42);
    let c = augment(&img, &aug, 43);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.data.len(), 48 * 48);
    assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
    // No augmentation enabled: identity.
    assert_eq!(augment(&img, &Augment::default(), 5), img);
    // Flip only (seeds that flip mirror the image exactly).
    let flip = Augment { hflip: true, ..Default::default() };
    let flipped: Vec<Grey> = (0..8).map(|s| augment(&img, &flip, s)).collect();
    let n_flipped = flipped.iter().filter(|f| **f != img).count();
    assert!(n_flipped > 0 && n_flipped < 8);
    for f in flipped.iter().filter(|f| **f != img) {
        for y in 0..48 {
            for x in 0..48 {
                assert!((f.data[y * 48 + x] - img.data[y * 48 + 47 - x]).abs() < 1e-5);
            }
        }
    }
    // Through the whole pipeline.
    let p = pre(1, 32, Normalization::UnitRange);
    assert_eq!(preprocess(&img, &p, Some((&aug, 9))).unwrap(), preprocess(&img, &p, Some((&aug, 9))).unwrap());
}

#[test]
fn sixteen_bit_rgb_and_bad_files() {
    let g16 = image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(6, 4, image::Luma([32768u16]));
    let img = decode_image(&png_bytes(image::DynamicImage::ImageLuma16(g16)), "g16.png").unwrap();
    assert_eq!((img.width, img.height), (6, 4));
    assert!(img.data.iter().all(|&v| (v - 32768.0 / 65535.0).abs() < 1e-6));
    let rgb = image::RgbImage::from_pixel(5, 5, image::Rgb([255, 0, 0]));
    let img = decode_image(&png_bytes(image::DynamicImage::ImageRgb8(rgb)), "red.png").unwrap();
    assert!(img.data.iter().all(|&v| (v - 0.299).abs() < 1e-6));
    let rgba = image::RgbaImage::from_pixel(5, 5, image::Rgba([0, 0, 255, 10]));
    let img = decode_image(&png_bytes(image::DynamicImage::ImageRgba8(rgba)), "blue.png").unwrap();
    assert!(img.data.iter().all(|&v| (v - 0.114).abs() < 1e-6));
    // JPEG grey.
    let mut jpg = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_pixel(16, 16, image::Luma([200])).write_to(&mut jpg, image::ImageFormat::Jpeg).unwrap();
    let img = decode_image(jpg.get_ref(), "x.jpg").unwrap();
    assert!(img.data.iter().all(|&v| (v - 200.0 / 255.0).abs() < 0.02));
    // Empty, garbage and truncated files: errors name the file.
    let dir = temp_dir("bad");
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let err = load_image(&empty).unwrap_err().to_string();
    assert!(err.contains("empty.png") && err.contains("empty"), "{err}");
    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let err = load_image(&garbage).unwrap_err().to_string();
    assert!(err.contains("garbage.png") && err.contains("cannot decode"), "{err}");
    let good = png_bytes(image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(64, 64, image::Luma([3]))));
    let cut = dir.join("cut.png");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    assert!(load_image(&cut).unwrap_err().to_string().contains("cut.png"));
    let err = load_image(&dir.join("absent.png")).unwrap_err().to_string();
    assert!(err.contains("absent.png"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Throughput of decode + resize + normalise on nih256 at 224 (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn throughput_nih256_224() {
    use rayon::prelude::*;
    let Some(dir) = shared() else { return };
    let src = cxr::data::CsvSource::open(&dir.join("nih256/labels.csv"), &Default::default()).unwrap();
    let paths: Vec<PathBuf> = src.data.records().iter().map(|r| r.path.clone()).collect();
    let p = pre(3, 224, Normalization::ImageNet);
    let work = |path: &PathBuf| preprocess(&load_image(path).unwrap(), &p, None).unwrap().len();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| paths.par_iter().map(work).sum::<usize>()); // warm the page cache
        let t = std::time::Instant::now();
        let n: usize = pool.install(|| paths.par_iter().map(work).sum());
        assert_eq!(n, paths.len() * 3 * 224 * 224);
        let dt = t.elapsed().as_secs_f64();
        let t2 = std::time::Instant::now();
        pool.install(|| paths.par_iter().for_each(|path| drop(load_image(path).unwrap())));
        let dec = t2.elapsed().as_secs_f64();
        println!(
            "threads {threads}: {:.0} images/s decode+preprocess ({:.0} images/s decode only)",
            paths.len() as f64 / dt,
            paths.len() as f64 / dec
        );
    }
}
