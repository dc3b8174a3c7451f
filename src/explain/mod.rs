//! Explaining a classifier's decision: class activation maps ([`gradcam`]), their upsampling to
//! the input ([`upsample`]), colormaps and overlays on the X-ray ([`colormap`], [`overlay`]),
//! panels of several images with their labels ([`panel`]) and how well maps point at
//! radiologists' boxes ([`localize`]).

pub mod colormap;
pub mod gradcam;
pub mod localize;
pub mod overlay;
pub mod panel;
pub mod upsample;

pub use colormap::Colormap;
pub use gradcam::{check_layer, default_layer, grad_cam, CamMap, CamMethod, CamOptions, CamOutput, MapValidity};
pub use localize::{
    area_fraction, box_in_input, iou_at, pointing_hit, read_bbox_csv, score, summarize, BoxScore, InputBox,
    LocalizationSummary,
};
pub use overlay::{overlay, write_overlay, RgbImage};
pub use panel::{write_panel, PanelTile};

use crate::error::{Error, Result};

/// A class activation map at the model's input resolution, for one image and one finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    /// The finding explained.
    pub finding: String,
    /// Its index in the model's outputs.
    pub class: usize,
    /// The model's probability for the finding on this image.
    pub probability: f32,
    pub method: CamMethod,
    /// The layer the map comes from.
    pub layer: String,
    /// True when negative evidence was cut (ReLU).
    pub relu: bool,
    /// The input side (the heatmap is `size x size`, like the preprocessed image).
    pub width: usize,
    pub height: usize,
    /// The map upsampled bilinearly to the input, raw (unnormalised) values, row-major.
    pub values: Vec<f32>,
    /// The map at the layer's own resolution.
    pub map: CamMap,
}

impl Heatmap {
    /// Upsamples `map` to `width x height`.
    pub fn new(
        map: CamMap,
        finding: String,
        probability: f32,
        options: &CamOptions,
        layer: &str,
        width: usize,
        height: usize,
    ) -> Heatmap {
        let values = upsample::bilinear(&map.values, map.width, map.height, width, height);
        Heatmap {
            finding,
            class: map.class,
            probability,
            method: options.method,
            layer: layer.to_string(),
            relu: options.relu,
            width,
            height,
            values,
            map,
        }
    }

    /// Whether the map carries information (judged at the layer's resolution).
    pub fn validity(&self) -> MapValidity {
        self.map.validity
    }

    /// Values scaled for display: with ReLU, `v / max` in [0, 1]; without, `0.5 + 0.5 v / max|v|`
    /// so 0.5 is "no evidence", 1 the strongest positive and 0 the strongest negative evidence.
    /// A map that is all zero or not finite is an error, never a picture.
    pub fn display_values(&self) -> Result<Vec<f32>> {
        if let Some(problem) = self.validity().problem() {
            return Err(Error::InvalidArgument {
                op: "heatmap",
                detail: format!("{} ({}, {}): {problem}", self.finding, self.method.name(), self.layer),
            });
        }
        let scale = self.values.iter().fold(0f32, |m, v| if self.relu { m.max(*v) } else { m.max(v.abs()) });
        if scale <= 0.0 || !scale.is_finite() {
            return Err(Error::InvalidArgument {
                op: "heatmap",
                detail: format!("{}: the map has no positive value to scale by", self.finding),
            });
        }
        Ok(if self.relu {
            self.values.iter().map(|v| v / scale).collect()
        } else {
            self.values.iter().map(|v| 0.5 + 0.5 * v / scale).collect()
        })
    }

    /// The (x, y) of the largest value, or None for an invalid map. Upsampling a coarse map
    /// makes plateaus (a corner cell's value fills the whole corner under `align_corners=False`),
    /// so on ties the peak is the tied pixel nearest to the tied pixels' centroid, not the first
    /// one in row-major order (which would pull every plateau towards the top-left).
    pub fn peak(&self) -> Option<(usize, usize)> {
        if self.validity() != MapValidity::Valid {
            return None;
        }
        let max = self.values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let tied: Vec<(f64, f64)> = self
            .values
            .iter()
            .enumerate()
            .filter(|(_, &v)| v == max)
            .map(|(i, _)| ((i % self.width) as f64, (i / self.width) as f64))
            .collect();
        let n = tied.len() as f64;
        let (cx, cy) = tied.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0 / n, b + p.1 / n));
        let dist = |p: &(f64, f64)| (p.0 - cx).powi(2) + (p.1 - cy).powi(2);
        let best = tied.iter().min_by(|a, b| dist(a).total_cmp(&dist(b)))?;
        Some((best.0 as usize, best.1 as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heat(values: Vec<f32>, w: usize, h: usize) -> Heatmap {
        let map = CamMap { image: 0, class: 0, logit: 0.0, width: w, height: h, values, validity: MapValidity::Valid };
        Heatmap::new(map, "Mass".into(), 0.5, &CamOptions::default(), "layer4", w * 4, h * 4)
    }

    #[test]
    fn peak_of_a_corner_plateau_is_its_centre_not_the_image_corner() {
        // A 2x2 map with its maximum in the bottom-right cell, upsampled to 8x8: the last two
        // rows and columns (the plateau past the cell centre) and the centre pixel share the max.
        let h = heat(vec![0.0, 0.0, 0.0, 1.0], 2, 2);
        let (x, y) = h.peak().unwrap();
        assert!(x >= 6 && y >= 6, "({x}, {y})");
        let h = heat(vec![0.0, 0.0, 0.0, 0.0], 2, 2);
        let mut invalid = h.clone();
        invalid.map.validity = MapValidity::AllZero;
        assert_eq!(invalid.peak(), None);
        assert!(invalid.display_values().unwrap_err().to_string().contains("all zero"));
    }

    #[test]
    fn signed_maps_are_centred_on_one_half() {
        let mut h = heat(vec![-2.0, 1.0, 0.0, 0.0], 2, 2);
        h.relu = false;
        let d = h.display_values().unwrap();
        assert!(d.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(d[0], 0.0); // the strongest negative evidence
        assert!((d[h.width * h.height - 1] - 0.5).abs() < 1e-6); // bottom-right: 0 evidence
    }
}
