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

    /// The (x, y) of the largest value (the first one in row-major order on ties), or None for an
    /// invalid map.
    pub fn peak(&self) -> Option<(usize, usize)> {
        if self.validity() != MapValidity::Valid {
            return None;
        }
        let (idx, _) =
            self.values
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) });
        Some((idx % self.width, idx / self.width))
    }
}
