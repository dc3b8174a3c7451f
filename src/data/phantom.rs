//! Synthetic chest phantoms: a built-in, learnable, deterministic dataset for tests and demos.
//!
//! Each image is a procedurally drawn frontal chest: dark lung fields inside a soft-tissue body,
//! a bright mediastinum, the heart shadow, ribs as faint arcs, and noise. Findings are painted at
//! known places, each with a [`LesionBox`]:
//!
//! - **Nodule**: a small round opacity in a lung field;
//! - **Mass**: a larger round opacity in a lung field;
//! - **Effusion**: fluid filling a costophrenic angle (the bottom of a lung, with a meniscus);
//! - **Cardiomegaly**: an enlarged heart shadow (the box is the heart).
//!
//! About half the images are normal; the others have one or more of the four findings. Every
//! image is its own patient (`phantom-<index>`). Images depend only on (seed, index).

use super::transform::{self, Grey};
use super::{Augment, Dataset, LesionBox, Preprocess, FINDINGS};
use crate::error::{Error, Result};
use crate::tensor::init::Rng;

/// Finding indices the phantoms use.
pub const NODULE: usize = 5;
pub const MASS: usize = 4;
pub const EFFUSION: usize = 2;
pub const CARDIOMEGALY: usize = 1;

#[derive(Debug, Clone)]
struct Blob {
    cx: f32,
    cy: f32,
    r: f32,
}

#[derive(Debug, Clone)]
struct Case {
    // Anatomy, in fractions of the image side.
    body: (f32, f32, f32, f32),
    lungs: [(f32, f32, f32, f32); 2],
    heart: (f32, f32, f32, f32),
    tone: f32,
    nodule: Option<Blob>,
    mass: Option<Blob>,
    /// (lung index, fluid top level as fraction of the side).
    effusion: Option<(usize, f32)>,
    noise_seed: u64,
}

/// The phantom dataset.
#[derive(Debug, Clone)]
pub struct Phantoms {
    size: usize,
    seed: u64,
    cases: Vec<Case>,
    labels: Vec<f32>,
    boxes: Vec<Vec<LesionBox>>,
    ids: Vec<String>,
}

fn mix(seed: u64, index: u64) -> u64 {
    let mut r = Rng::new(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.next_u64()
}

/// A point inside the lung ellipse `lung` (inner 65%, away from the heart side's lower part).
fn point_in_lung(rng: &mut Rng, lung: (f32, f32, f32, f32), margin: f32) -> (f32, f32) {
    let (cx, cy, rx, ry) = lung;
    loop {
        let a = 2.0 * rng.uniform() as f32 - 1.0;
        let b = 2.0 * rng.uniform() as f32 - 1.0;
        if a * a + b * b <= 1.0 {
            let k = 0.65 - margin;
            return (cx + a * rx * k, cy + b * ry * k - 0.05 * ry);
        }
    }
}

impl Phantoms {
    /// `count` phantoms of `size x size` pixels drawn from `seed`.
    pub fn new(count: usize, size: usize, seed: u64) -> Phantoms {
        let mut cases = Vec::with_capacity(count);
        let mut labels = Vec::with_capacity(count * FINDINGS.len());
        let mut boxes = Vec::with_capacity(count);
        for i in 0..count {
            let mut rng = Rng::new(mix(seed, i as u64));
            let u = |rng: &mut Rng, lo: f32, hi: f32| lo + (hi - lo) * rng.uniform() as f32;
            let (dx, dy, sc) = (u(&mut rng, -0.02, 0.02), u(&mut rng, -0.02, 0.02), u(&mut rng, 0.95, 1.04));
            let p = |x: f32, y: f32| (0.5 + (x - 0.5) * sc + dx, 0.5 + (y - 0.5) * sc + dy);
            let (bx, by) = p(0.5, 0.56);
            let body = (bx, by, 0.44 * sc, 0.5 * sc);
            let (lx, ly) = p(0.31, 0.47);
            let (rx_, ry_) = p(0.69, 0.47);
            let lung_rx = 0.14 * sc * u(&mut rng, 0.95, 1.05);
            let lung_ry = 0.28 * sc * u(&mut rng, 0.95, 1.05);
            let lungs = [(lx, ly, lung_rx, lung_ry), (rx_, ry_, lung_rx, lung_ry)];
            let normal = rng.uniform() < 0.5;
            let mut has = [false; 4]; // nodule, mass, effusion, cardiomegaly
            if !normal {
                for h in has.iter_mut() {
                    *h = rng.uniform() < 0.4;
                }
                if !has.iter().any(|&h| h) {
                    has[rng.below(4) as usize] = true;
                }
            }
            let (hx, hy) = p(0.55, 0.64);
            let heart = if has[3] {
                (hx + 0.02 * sc, hy, u(&mut rng, 0.19, 0.22) * sc, u(&mut rng, 0.14, 0.16) * sc)
            } else {
                (hx, hy, u(&mut rng, 0.115, 0.135) * sc, u(&mut rng, 0.10, 0.115) * sc)
            };
            let mut case_boxes = Vec::new();
            let px = size as f32;
            let mut blob = |rng: &mut Rng, finding: usize, rlo: f32, rhi: f32| {
                let side = rng.below(2) as usize;
                let r = u(rng, rlo, rhi) * sc;
                let (cx, cy) = point_in_lung(rng, lungs[side], r / lungs[side].2.max(1e-3) * 0.3);
                case_boxes.push(LesionBox {
                    finding,
                    x: (cx - r) * px,
                    y: (cy - r) * px,
                    w: 2.0 * r * px,
                    h: 2.0 * r * px,
                });
                Blob { cx, cy, r }
            };
            let nodule = has[0].then(|| blob(&mut rng, NODULE, 0.03, 0.04));
            let mass = has[1].then(|| blob(&mut rng, MASS, 0.07, 0.09));
            let effusion = has[2].then(|| {
                let side = rng.below(2) as usize;
                let (cx, cy, rx, ry) = lungs[side];
                let level = cy + ry - u(&mut rng, 0.5, 0.7) * ry;
                case_boxes.push(LesionBox {
                    finding: EFFUSION,
                    x: (cx - rx) * px,
                    y: (level - 0.06) * px,
                    w: 2.0 * rx * px,
                    h: (cy + ry - level + 0.06) * px,
                });
                (side, level)
            });
            if has[3] {
                let (cx, cy, rx, ry) = heart;
                case_boxes.push(LesionBox {
                    finding: CARDIOMEGALY,
                    x: (cx - rx) * px,
                    y: (cy - ry) * px,
                    w: 2.0 * rx * px,
                    h: 2.0 * ry * px,
                });
            }
            let mut l = [0f32; 14];
            for b in &case_boxes {
                l[b.finding] = 1.0;
            }
            labels.extend_from_slice(&l);
            boxes.push(case_boxes);
            cases.push(Case {
                body,
                lungs,
                heart,
                tone: u(&mut rng, -0.04, 0.04),
                nodule,
                mass,
                effusion,
                noise_seed: rng.next_u64(),
            });
        }
        Phantoms { size, seed, cases, labels, boxes, ids: (0..count).map(|i| format!("phantom-{i}")).collect() }
    }

    /// The native side length.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Draws image `index` at its native size, values in [0, 1].
    pub fn render(&self, index: usize) -> Grey {
        let c = &self.cases[index];
        let n = self.size;
        let mut data = vec![0f32; n * n];
        let mut rng = Rng::new(c.noise_seed);
        let edge = 1.5 / n as f32; // soft edges about 1.5 pixels wide
        let inside = |x: f32, y: f32, e: (f32, f32, f32, f32)| -> f32 {
            // 1 inside, 0 outside, smooth across the boundary.
            let d = (((x - e.0) / e.2).powi(2) + ((y - e.1) / e.3).powi(2)).sqrt();
            let m = e.2.min(e.3);
            ((1.0 - d) * m / edge * 0.5 + 0.5).clamp(0.0, 1.0)
        };
        for py in 0..n {
            for px in 0..n {
                let x = (px as f32 + 0.5) / n as f32;
                let y = (py as f32 + 0.5) / n as f32;
                let body = inside(x, y, c.body);
                let mut v = 0.06 + body * 0.42;
                // Lungs with ribs.
                for (k, lung) in c.lungs.iter().enumerate() {
                    let li = inside(x, y, *lung);
                    if li <= 0.0 {
                        continue;
                    }
                    let mut lv = 0.16;
                    // Ribs: arcs y = y0 + 0.35 * dx^2, every 0.07.
                    let dxl = (x - 0.5).abs();
                    let yr = y - 0.35 * dxl * dxl;
                    let phase = ((yr - 0.12) / 0.07).rem_euclid(1.0);
                    if phase < 0.22 {
                        lv += 0.07 * (1.0 - (phase / 0.11 - 1.0).abs());
                    }
                    if let Some((side, level)) = c.effusion {
                        if side == k {
                            let lateral = if k == 0 { (lung.0 - x) / lung.2 } else { (x - lung.0) / lung.2 };
                            let meniscus = level - 0.05 * lateral.max(0.0);
                            let t = ((y - meniscus) / edge * 0.5 + 0.5).clamp(0.0, 1.0);
                            lv = lv * (1.0 - t) + 0.62 * t;
                        }
                    }
                    v = v * (1.0 - li) + lv * li;
                }
                // Mediastinum and spine.
                if (x - (c.body.0)).abs() < 0.06 && y > c.lungs[0].1 - c.lungs[0].3 - 0.05 && y < c.heart.1 {
                    v = v.max(0.68);
                }
                // Heart shadow.
                let hi = inside(x, y, c.heart);
                v = v * (1.0 - hi) + 0.66 * hi;
                // Lesions (in the lungs).
                for b in [&c.nodule, &c.mass].into_iter().flatten() {
                    let d2 = ((x - b.cx).powi(2) + (y - b.cy).powi(2)) / (b.r * b.r);
                    if d2 < 1.0 {
                        v += 0.38 * (1.0 - d2).sqrt();
                    }
                }
                v += c.tone + 0.025 * rng.normal() as f32;
                data[py * n + px] = v.clamp(0.0, 1.0);
            }
        }
        Grey { width: n, height: n, data }
    }
}

impl Dataset for Phantoms {
    fn len(&self) -> usize {
        self.cases.len()
    }
    fn labels(&self, index: usize) -> &[f32] {
        &self.labels[index * FINDINGS.len()..(index + 1) * FINDINGS.len()]
    }
    fn patient(&self, index: usize) -> Option<&str> {
        Some(&self.ids[index])
    }
    fn image_id(&self, index: usize) -> &str {
        &self.ids[index]
    }
    fn image(&self, index: usize, preprocess: &Preprocess, augment: Option<(&Augment, u64)>) -> Result<Vec<f32>> {
        if index >= self.cases.len() {
            return Err(Error::data("phantom", format!("index {index} out of range ({})", self.cases.len())));
        }
        transform::check_preprocess(preprocess)?;
        transform::preprocess(&self.render(index), preprocess, augment)
    }
    fn boxes(&self, index: usize) -> (&[LesionBox], (usize, usize)) {
        (&self.boxes[index], (self.size, self.size))
    }
    fn cache_key(&self) -> Option<String> {
        Some(format!("phantom:{}:{}:{}", self.cases.len(), self.size, self.seed))
    }
}
