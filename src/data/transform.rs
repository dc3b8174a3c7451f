//! Image decoding, resizing, augmentation and normalisation.
//!
//! The pipeline for one image is always the same, so that every source (files, arrays, phantoms,
//! the loader's on-disk cache) produces identical model input:
//!
//! 1. decode to a grey plane in [0, 1] ([`decode_image`], [`load_image`]; 8/16-bit, grey or
//!    RGB/RGBA, luminance by ITU-R 601-2 as PIL's `convert("L")`);
//! 2. resize the shorter side to `size` with an antialiasing triangle filter (PIL's bilinear
//!    `resize`) and center-crop to `size x size` ([`resize_crop`]);
//! 3. seeded augmentation on that square ([`augment`]): random resized crop, rotation, flip (one
//!    bilinear warp with border replication), then brightness/contrast;
//! 4. normalisation and channel replication ([`normalize`]).
//!
//! Steps 3-4 are [`finish`]; the loader's cache stores the output of step 2 as uint8.

use super::{Augment, Normalization, Preprocess};
use crate::error::{Error, Result};
use crate::tensor::init::Rng;
use std::path::Path;

/// ImageNet channel means (RGB).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A grey image with values in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Grey {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Grey {
    /// A grey image from uint8 pixels (divided by 255).
    pub fn from_u8(width: usize, height: usize, pixels: &[u8]) -> Grey {
        debug_assert_eq!(pixels.len(), width * height);
        Grey { width, height, data: pixels.iter().map(|&p| p as f32 / 255.0).collect() }
    }
    /// The pixels rounded to uint8.
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }
}

/// Checks that `preprocess` is usable: 1 or 3 channels, size > 0, XrayVision with 1 channel.
pub fn check_preprocess(preprocess: &Preprocess) -> Result<()> {
    if preprocess.channels != 1 && preprocess.channels != 3 {
        return Err(Error::InvalidArgument {
            op: "preprocess",
            detail: format!("channels must be 1 or 3, got {}", preprocess.channels),
        });
    }
    if preprocess.size == 0 {
        return Err(Error::InvalidArgument { op: "preprocess", detail: "size must be positive".into() });
    }
    if preprocess.normalization == Normalization::XrayVision && preprocess.channels != 1 {
        return Err(Error::InvalidArgument {
            op: "preprocess",
            detail: format!("XrayVision normalisation needs 1 channel, got {}", preprocess.channels),
        });
    }
    Ok(())
}

/// Decodes a PNG or JPEG held in memory to grey. `name` is used in errors.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<Grey> {
    use image::DynamicImage as D;
    if bytes.is_empty() {
        return Err(Error::data(name, "empty image file"));
    }
    let img = image::load_from_memory(bytes).map_err(|e| Error::data(name, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::data(name, "image has zero width or height"));
    }
    const R: f32 = 0.299;
    const G: f32 = 0.587;
    const B: f32 = 0.114;
    let data: Vec<f32> = match &img {
        D::ImageLuma8(b) => b.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        D::ImageLumaA8(b) => b.as_raw().chunks_exact(2).map(|p| p[0] as f32 / 255.0).collect(),
        D::ImageLuma16(b) => b.as_raw().iter().map(|&v| v as f32 / 65535.0).collect(),
        D::ImageLumaA16(b) => b.as_raw().chunks_exact(2).map(|p| p[0] as f32 / 65535.0).collect(),
        D::ImageRgb8(b) => {
            b.as_raw().chunks_exact(3).map(|p| (R * p[0] as f32 + G * p[1] as f32 + B * p[2] as f32) / 255.0).collect()
        }
        D::ImageRgba8(b) => {
            b.as_raw().chunks_exact(4).map(|p| (R * p[0] as f32 + G * p[1] as f32 + B * p[2] as f32) / 255.0).collect()
        }
        D::ImageRgb16(b) => b
            .as_raw()
            .chunks_exact(3)
            .map(|p| (R * p[0] as f32 + G * p[1] as f32 + B * p[2] as f32) / 65535.0)
            .collect(),
        D::ImageRgba16(b) => b
            .as_raw()
            .chunks_exact(4)
            .map(|p| (R * p[0] as f32 + G * p[1] as f32 + B * p[2] as f32) / 65535.0)
            .collect(),
        other => other.to_luma32f().into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect(),
    };
    Ok(Grey { width: w, height: h, data })
}

/// Reads and decodes an image file. Errors name the file.
pub fn load_image(path: &Path) -> Result<Grey> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, &path.display().to_string())
}

/// Triangle-filter weights for resampling `in_len` samples to `out_len` (PIL's bilinear filter,
/// widened when shrinking so it averages every input pixel: antialiasing). Only outputs
/// `offset..offset + count` are computed. Returns, per output, the first input index and weights.
fn filter_weights(in_len: usize, out_len: usize, offset: usize, count: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_len as f64 / out_len as f64;
    let support = scale.max(1.0);
    let inv = 1.0 / support;
    (offset..offset + count)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(in_len);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let x = (j as f64 + 0.5 - center) * inv;
                    (1.0 - x.abs()).max(0.0)
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                // Degenerate (cannot happen for in_len >= 1): nearest pixel.
                w.iter_mut().for_each(|v| *v = 0.0);
                let k = ((center as usize).min(in_len - 1)).saturating_sub(lo).min(w.len() - 1);
                w[k] = 1.0;
            }
            // Trim zero weights at both ends.
            let first = w.iter().position(|&v| v > 0.0).unwrap_or(0);
            let last = w.iter().rposition(|&v| v > 0.0).unwrap_or(0);
            (lo + first, w[first..=last].iter().map(|&v| v as f32).collect())
        })
        .collect()
}

/// Filter weights padded to a fixed tap count: per output a start index (clamped so that
/// `start + taps <= in_len`) and `taps` weights (zeros where the filter does not reach).
struct Taps {
    starts: Vec<usize>,
    taps: usize,
    weights: Vec<f32>,
}

fn padded_weights(in_len: usize, out_len: usize, offset: usize, count: usize) -> Taps {
    let raw = filter_weights(in_len, out_len, offset, count);
    let taps = raw.iter().map(|(_, w)| w.len()).max().unwrap_or(1).min(in_len);
    let mut starts = Vec::with_capacity(count);
    let mut weights = vec![0f32; count * taps];
    for (i, (s, w)) in raw.iter().enumerate() {
        let start = (*s).min(in_len - taps);
        for (j, &v) in w.iter().enumerate() {
            weights[i * taps + s - start + j] = v;
        }
        starts.push(start);
    }
    Taps { starts, taps, weights }
}

/// One row of the horizontal pass with a compile-time tap count.
fn hpass<const T: usize>(src: &[f32], dst: &mut [f32], t: &Taps) {
    for ((d, &s), w) in dst.iter_mut().zip(&t.starts).zip(t.weights.chunks_exact(T)) {
        let x: &[f32; T] = src[s..s + T].try_into().unwrap();
        let mut acc = 0.0;
        for k in 0..T {
            acc += x[k] * w[k];
        }
        *d = acc;
    }
}

fn hpass_dyn(src: &[f32], dst: &mut [f32], t: &Taps) {
    for ((d, &s), w) in dst.iter_mut().zip(&t.starts).zip(t.weights.chunks_exact(t.taps)) {
        *d = src[s..s + t.taps].iter().zip(w).map(|(a, b)| a * b).sum();
    }
}

/// Resizes the shorter side to `size` (antialiased triangle filter) and center-crops to
/// `size x size`. Only the kept region is computed.
pub fn resize_crop(img: &Grey, size: usize) -> Grey {
    let (w, h) = (img.width, img.height);
    if w == size && h == size {
        return img.clone();
    }
    // Resized dimensions: the shorter side becomes `size`.
    let (rw, rh) = if w <= h {
        (size, ((h as f64 * size as f64 / w as f64).round() as usize).max(size))
    } else {
        (((w as f64 * size as f64 / h as f64).round() as usize).max(size), size)
    };
    let (ox, oy) = ((rw - size) / 2, (rh - size) / 2);
    let wx = padded_weights(w, rw, ox, size);
    let wy = padded_weights(h, rh, oy, size);
    // Vertical pass first (whole rows, vectorisable), over full input width.
    let mut tmp = vec![0f32; size * w];
    for (y, (&start, k)) in wy.starts.iter().zip(wy.weights.chunks_exact(wy.taps)).enumerate() {
        let dst = &mut tmp[y * w..(y + 1) * w];
        for (j, &kw) in k.iter().enumerate() {
            if kw == 0.0 {
                continue;
            }
            let src = &img.data[(start + j) * w..(start + j + 1) * w];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += kw * s;
            }
        }
    }
    // Horizontal pass.
    let mut out = vec![0f32; size * size];
    for (src, dst) in tmp.chunks_exact(w).zip(out.chunks_exact_mut(size)) {
        match wx.taps {
            1 => hpass::<1>(src, dst, &wx),
            2 => hpass::<2>(src, dst, &wx),
            3 => hpass::<3>(src, dst, &wx),
            4 => hpass::<4>(src, dst, &wx),
            5 => hpass::<5>(src, dst, &wx),
            6 => hpass::<6>(src, dst, &wx),
            _ => hpass_dyn(src, dst, &wx),
        }
    }
    Grey { width: size, height: size, data: out }
}

/// The random draws of one augmentation (drawn in a fixed order, so a seed always gives the same
/// parameters whatever is enabled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentParams {
    /// Crop width and height as fractions of the side, and the crop's top-left corner (fractions).
    pub crop: (f32, f32, f32, f32),
    /// Rotation in radians.
    pub angle: f32,
    pub flip: bool,
    pub brightness: f32,
    pub contrast: f32,
}

impl AugmentParams {
    /// Draws the parameters of `aug` for `seed`.
    pub fn draw(aug: &Augment, seed: u64) -> AugmentParams {
        let mut rng = Rng::new(seed);
        let u: [f32; 8] = std::array::from_fn(|_| rng.uniform() as f32);
        let crop = match aug.crop_scale {
            Some((lo, hi)) => {
                let (lo, hi) = (lo.clamp(0.01, 1.0), hi.clamp(0.01, 1.0));
                let area = lo + (hi - lo) * u[0];
                let log_r = (0.9f32).ln() + ((1.1f32).ln() - (0.9f32).ln()) * u[1];
                let r = log_r.exp();
                let cw = (area * r).sqrt().min(1.0);
                let ch = (area / r).sqrt().min(1.0);
                (cw, ch, (1.0 - cw) * u[2], (1.0 - ch) * u[3])
            }
            None => (1.0, 1.0, 0.0, 0.0),
        };
        AugmentParams {
            crop,
            angle: (2.0 * u[4] - 1.0) * aug.rotation_deg.to_radians(),
            flip: aug.hflip && u[5] < 0.5,
            brightness: (2.0 * u[6] - 1.0) * aug.brightness,
            contrast: 1.0 + (2.0 * u[7] - 1.0) * aug.contrast,
        }
    }
}

/// Applies augmentation `aug` under `seed` to a square image, returning an image of the same size.
pub fn augment(img: &Grey, aug: &Augment, seed: u64) -> Grey {
    let p = AugmentParams::draw(aug, seed);
    let (w, h) = (img.width, img.height);
    let mut out = img.clone();
    let geometric = p.crop != (1.0, 1.0, 0.0, 0.0) || p.angle != 0.0 || p.flip;
    if geometric {
        let (cw, ch, cx, cy) = p.crop;
        let (ccx, ccy) = ((cx + cw / 2.0) * w as f32, (cy + ch / 2.0) * h as f32);
        let (sw, sh) = (cw * w as f32, ch * h as f32);
        let (sin, cos) = p.angle.sin_cos();
        for v in 0..h {
            for u in 0..w {
                let mut px = (u as f32 + 0.5) / w as f32 - 0.5;
                let py = (v as f32 + 0.5) / h as f32 - 0.5;
                if p.flip {
                    px = -px;
                }
                let (dx, dy) = (px * sw, py * sh);
                let sx = ccx + cos * dx - sin * dy - 0.5;
                let sy = ccy + sin * dx + cos * dy - 0.5;
                out.data[v * w + u] = bilinear_clamped(img, sx, sy);
            }
        }
    }
    if p.brightness != 0.0 || p.contrast != 1.0 {
        let mean = out.data.iter().sum::<f32>() / out.data.len().max(1) as f32;
        for v in &mut out.data {
            *v = ((*v - mean) * p.contrast + mean + p.brightness).clamp(0.0, 1.0);
        }
    }
    out
}

fn bilinear_clamped(img: &Grey, x: f32, y: f32) -> f32 {
    let (w, h) = (img.width as isize, img.height as isize);
    let (x0f, y0f) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0f, y - y0f);
    let (x0, y0) = (x0f as isize, y0f as isize);
    let at = |xx: isize, yy: isize| img.data[(yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)) as usize];
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
    let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Normalises a grey image in [0, 1] to model input: `channels x h x w` values.
pub fn normalize(img: &Grey, channels: usize, normalization: Normalization) -> Vec<f32> {
    let n = img.data.len();
    let mut out = Vec::with_capacity(n * channels);
    for c in 0..channels {
        match normalization {
            Normalization::UnitRange => out.extend_from_slice(&img.data),
            Normalization::ImageNet => {
                // One channel: the average of the three (what grey-input ImageNet models use).
                let (m, s) = if channels == 3 {
                    (IMAGENET_MEAN[c], IMAGENET_STD[c])
                } else {
                    (IMAGENET_MEAN.iter().sum::<f32>() / 3.0, IMAGENET_STD.iter().sum::<f32>() / 3.0)
                };
                out.extend(img.data.iter().map(|&v| (v - m) / s));
            }
            Normalization::XrayVision => out.extend(img.data.iter().map(|&v| (2.0 * v - 1.0) * 1024.0)),
        }
    }
    out
}

/// Steps 3-4 of the pipeline on an already resized square image: augmentation (when given) and
/// normalisation.
pub fn finish(base: &Grey, preprocess: &Preprocess, augmentation: Option<(&Augment, u64)>) -> Result<Vec<f32>> {
    check_preprocess(preprocess)?;
    if base.width != preprocess.size || base.height != preprocess.size {
        return Err(Error::InvalidArgument {
            op: "preprocess",
            detail: format!(
                "base image is {}x{}, expected {}x{}",
                base.width, base.height, preprocess.size, preprocess.size
            ),
        });
    }
    match augmentation {
        Some((aug, seed)) => Ok(normalize(&augment(base, aug, seed), preprocess.channels, preprocess.normalization)),
        None => Ok(normalize(base, preprocess.channels, preprocess.normalization)),
    }
}

/// The whole pipeline on a decoded image: resize + crop, augmentation, normalisation.
pub fn preprocess(img: &Grey, preprocess: &Preprocess, augmentation: Option<(&Augment, u64)>) -> Result<Vec<f32>> {
    check_preprocess(preprocess)?;
    finish(&resize_crop(img, preprocess.size), preprocess, augmentation)
}
