//! A heatmap blended over the X-ray it explains, as an RGB PNG.

use super::{Colormap, Heatmap};
use crate::data::transform::Grey;
use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;
use std::path::Path;

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Encodes as PNG.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        use image::ImageEncoder;
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(&self.data, self.width as u32, self.height as u32, image::ExtendedColorType::Rgb8)
            .map_err(|e| Error::InvalidArgument { op: "png", detail: e.to_string() })?;
        Ok(bytes)
    }

    /// Writes a PNG atomically.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_png()?)
    }
}

/// `(1 - alpha) * xray + alpha * colormap(heat)` per pixel. `xray` is the preprocessed image
/// (same size as the heatmap); `alpha` in [0, 1]. Invalid maps are an error (see
/// [`Heatmap::display_values`]).
pub fn overlay(xray: &Grey, heat: &Heatmap, colormap: Colormap, alpha: f32) -> Result<RgbImage> {
    if xray.width != heat.width || xray.height != heat.height {
        return Err(Error::ShapeMismatch {
            op: "overlay",
            detail: format!("image {}x{}, heatmap {}x{}", xray.width, xray.height, heat.width, heat.height),
        });
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidArgument { op: "overlay", detail: format!("alpha must be in [0, 1], got {alpha}") });
    }
    let shown = heat.display_values()?;
    let mut data = Vec::with_capacity(shown.len() * 3);
    for (&g, &h) in xray.data.iter().zip(&shown) {
        let g = g.clamp(0.0, 1.0);
        for c in colormap.rgb(h) {
            data.push((((1.0 - alpha) * g + alpha * c) * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    Ok(RgbImage { width: xray.width, height: xray.height, data })
}

/// [`overlay`] written to `path` as PNG.
pub fn write_overlay(path: &Path, xray: &Grey, heat: &Heatmap, colormap: Colormap, alpha: f32) -> Result<()> {
    overlay(xray, heat, colormap, alpha)?.write_png(path)
}
