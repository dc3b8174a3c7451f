//! How well a map points at a radiologist's box: the pointing game and the IoU of the thresholded
//! map, with boxes brought from the original image's pixels to the model input.
//!
//! - **Pointing game** (Zhang et al. 2016), strict form: a hit when the map's maximum (at input
//!   resolution) falls inside the box; no tolerance margin.
//! - **IoU**: the map is thresholded at `fraction * max` (0.5 by default in `tools gradcam`,
//!   as in the weakly-supervised localisation of the ChestX-ray8 paper's heatmap boxes), and the
//!   pixel set compared with the box's pixels.

use super::{Heatmap, MapValidity};
use crate::data::{LesionBox, FINDINGS};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A box `(x, y, w, h)` in input pixels.
pub type InputBox = (f32, f32, f32, f32);

/// Maps a box in the original `orig_w x orig_h` image to the `size x size` model input made by
/// [`resize_crop`](crate::data::transform::resize_crop) (shorter side to `size`, centre crop).
/// The result may extend past the input when the crop cut the box.
pub fn box_in_input(b: &LesionBox, orig_w: usize, orig_h: usize, size: usize) -> InputBox {
    let (w, h, s) = (orig_w as f64, orig_h as f64, size as f64);
    let (rw, rh) = if orig_w <= orig_h { (s, ((h * s / w).round()).max(s)) } else { (((w * s / h).round()).max(s), s) };
    let (ox, oy) = (((rw as usize - size) / 2) as f64, ((rh as usize - size) / 2) as f64);
    let (fx, fy) = (rw / w, rh / h);
    ((b.x as f64 * fx - ox) as f32, (b.y as f64 * fy - oy) as f32, (b.w as f64 * fx) as f32, (b.h as f64 * fy) as f32)
}

fn inside(px: usize, py: usize, b: InputBox) -> bool {
    // A pixel counts by its centre.
    let (cx, cy) = (px as f32 + 0.5, py as f32 + 0.5);
    cx >= b.0 && cx <= b.0 + b.2 && cy >= b.1 && cy <= b.1 + b.3
}

/// True when the heatmap's peak lies in `b`; None for a map that is not valid.
pub fn pointing_hit(heat: &Heatmap, b: InputBox) -> Option<bool> {
    heat.peak().map(|(x, y)| inside(x, y, b))
}

/// IoU of `{values >= fraction * max}` with `b`; None for a map that is not valid or has no
/// positive value.
pub fn iou_at(heat: &Heatmap, b: InputBox, fraction: f32) -> Option<f64> {
    if heat.validity() != MapValidity::Valid {
        return None;
    }
    let max = heat.values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max <= 0.0 {
        return None;
    }
    let cut = fraction * max;
    let (mut inter, mut union) = (0u64, 0u64);
    for (i, &v) in heat.values.iter().enumerate() {
        let (on, in_box) = (v >= cut, inside(i % heat.width, i / heat.width, b));
        inter += (on && in_box) as u64;
        union += (on || in_box) as u64;
    }
    Some(if union == 0 { 0.0 } else { inter as f64 / union as f64 })
}

/// The fraction of a `size x size` input that `b` covers (clipped to the input).
pub fn area_fraction(b: InputBox, size: usize) -> f64 {
    let s = size as f32;
    let w = ((b.0 + b.2).min(s) - b.0.max(0.0)).max(0.0);
    let h = ((b.1 + b.3).min(s) - b.1.max(0.0)).max(0.0);
    (w * h) as f64 / (s * s) as f64
}

/// Scores one map against one box: pointing game, IoU at `fraction` of the max, chance level.
pub fn score(heat: &Heatmap, image: &str, b: InputBox, fraction: f32) -> BoxScore {
    BoxScore {
        image: image.to_string(),
        finding: heat.finding.clone(),
        hit: pointing_hit(heat, b),
        iou: iou_at(heat, b, fraction),
        area_fraction: area_fraction(b, heat.width),
    }
}

/// One (image, box) scored.
#[derive(Debug, Clone, Serialize)]
pub struct BoxScore {
    pub image: String,
    pub finding: String,
    /// None when the map was all zero or not finite (reported, not counted as a hit or a miss).
    pub hit: Option<bool>,
    pub iou: Option<f64>,
    /// Fraction of the input the box covers: the hit rate of a peak placed at random.
    pub area_fraction: f64,
}

/// Per-finding totals of [`BoxScore`]s.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LocalizationSummary {
    pub finding: String,
    pub boxes: usize,
    /// Boxes whose map was valid (the denominator of the rates).
    pub scored: usize,
    pub hits: usize,
    pub hit_rate: Option<f64>,
    pub mean_iou: Option<f64>,
    /// Mean box area fraction over the scored boxes: the pointing game's chance level.
    pub chance: Option<f64>,
}

/// Summarises scores by finding, in [`FINDINGS`] order, then any other names alphabetically.
pub fn summarize(scores: &[BoxScore]) -> Vec<LocalizationSummary> {
    let mut by: BTreeMap<(usize, String), Vec<&BoxScore>> = BTreeMap::new();
    for s in scores {
        let order = FINDINGS.iter().position(|f| *f == s.finding).unwrap_or(FINDINGS.len());
        by.entry((order, s.finding.clone())).or_default().push(s);
    }
    by.into_iter()
        .map(|((_, finding), list)| {
            let scored: Vec<&&BoxScore> = list.iter().filter(|s| s.hit.is_some()).collect();
            let hits = scored.iter().filter(|s| s.hit == Some(true)).count();
            let ious: Vec<f64> = scored.iter().filter_map(|s| s.iou).collect();
            let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let areas: Vec<f64> = scored.iter().map(|s| s.area_fraction).collect();
            LocalizationSummary {
                finding,
                boxes: list.len(),
                scored: scored.len(),
                hits,
                hit_rate: (!scored.is_empty()).then(|| hits as f64 / scored.len() as f64),
                mean_iou: mean(&ious),
                chance: mean(&areas),
            }
        })
        .collect()
}

/// NIH's `BBox_List_2017.csv` (plain or `.gz`): image name to its boxes (1024x1024 pixels of the
/// original). The file's `Infiltrate` is the label set's `Infiltration`.
pub fn read_bbox_csv(path: &Path) -> Result<BTreeMap<String, Vec<LesionBox>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(reader);
    let mut out: BTreeMap<String, Vec<LesionBox>> = BTreeMap::new();
    for (row, record) in csv.records().enumerate() {
        let at = || format!("{}: row {}", path.display(), row + 2);
        let record = record.map_err(|e| Error::data(at(), e.to_string()))?;
        if record.len() < 6 {
            return Err(Error::data(at(), "expected image, finding, x, y, w, h"));
        }
        let name = if &record[1] == "Infiltrate" { "Infiltration" } else { &record[1] };
        let finding = FINDINGS
            .iter()
            .position(|f| *f == name)
            .ok_or_else(|| Error::data(at(), format!("unknown finding '{}'", &record[1])))?;
        let num = |i: usize| -> Result<f32> {
            record[i].trim().parse::<f32>().map_err(|_| Error::data(at(), format!("not a number: '{}'", &record[i])))
        };
        let b = LesionBox { finding, x: num(2)?, y: num(3)?, w: num(4)?, h: num(5)? };
        out.entry(record[0].to_string()).or_default().push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_follow_resize_and_centre_crop() {
        let b = LesionBox { finding: 0, x: 512.0, y: 256.0, w: 128.0, h: 64.0 };
        assert_eq!(box_in_input(&b, 1024, 1024, 256), (128.0, 64.0, 32.0, 16.0));
        // 2048 wide, 1024 high to 256: resized to 512x256, 128 cut on the left.
        assert_eq!(box_in_input(&b, 2048, 1024, 256), (0.0, 64.0, 32.0, 16.0));
    }
}
