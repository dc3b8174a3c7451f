//! A panel of several overlays in a grid, each titled with the model's findings and the ground
//! truth ("pred: ... / true: ..."), as the notebooks show Grad-CAM results. Text uses the font
//! embedded in [`crate::plot`].

use super::RgbImage;
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// One cell of the panel.
#[derive(Debug, Clone)]
pub struct PanelTile {
    /// The overlay (or the plain X-ray when the map could not be shown).
    pub image: RgbImage,
    /// Title lines above the image (e.g. `pred: Mass 0.91`, `true: Mass, Nodule`).
    pub title: Vec<String>,
}

const LINE: u32 = 18;
const GAP: u32 = 8;
/// Small inputs (64 or 96 px) are enlarged by an integer factor to at least this side, so the
/// titles above them fit and the heatmap stays readable.
const MIN_SIDE: usize = 224;

/// Nearest-neighbour enlargement by an integer factor (keeps the map's cells crisp).
fn enlarge(img: &RgbImage, factor: usize) -> RgbImage {
    if factor <= 1 {
        return img.clone();
    }
    let (w, h) = (img.width * factor, img.height * factor);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let i = ((y / factor) * img.width + x / factor) * 3;
            data.extend_from_slice(&img.data[i..i + 3]);
        }
    }
    RgbImage { width: w, height: h, data }
}

/// Writes `tiles` as a grid of `columns` to `path` (PNG, atomically). Tiles may differ in size;
/// each cell is as large as the largest tile.
pub fn write_panel(path: &Path, tiles: &[PanelTile], columns: usize, heading: &str) -> Result<()> {
    if tiles.is_empty() || columns == 0 {
        return Err(Error::InvalidArgument {
            op: "panel",
            detail: "a panel needs at least one tile and one column".into(),
        });
    }
    let side = tiles.iter().map(|t| t.image.width.max(t.image.height)).max().unwrap_or(1).max(1);
    let factor = MIN_SIDE.div_ceil(side);
    let enlarged: Vec<PanelTile> =
        tiles.iter().map(|t| PanelTile { image: enlarge(&t.image, factor), title: t.title.clone() }).collect();
    let tiles = &enlarged[..];
    let cols = columns.min(tiles.len()) as u32;
    let rows = tiles.len().div_ceil(cols as usize) as u32;
    let lines = tiles.iter().map(|t| t.title.len()).max().unwrap_or(0) as u32;
    let cell_w = tiles.iter().map(|t| t.image.width).max().unwrap_or(1) as u32;
    let cell_h = tiles.iter().map(|t| t.image.height).max().unwrap_or(1) as u32;
    let title_h = lines * LINE + 4;
    let head_h = if heading.is_empty() { 0 } else { 30 };
    let (w, h) = (cols * (cell_w + GAP) + GAP, head_h + rows * (title_h + cell_h + GAP) + GAP);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let origin = |i: usize| {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        (GAP + c * (cell_w + GAP), head_h + GAP + r * (title_h + cell_h + GAP))
    };
    for (i, tile) in tiles.iter().enumerate() {
        let (x, y) = origin(i);
        blit(&mut buf, w, &tile.image, x, y + title_h);
    }
    crate::plot::ensure_fonts();
    draw_text(&mut buf, (w, h), tiles, heading, &origin, cell_w)
        .map_err(|e| Error::format(path, format!("cannot draw panel: {e}")))?;
    RgbImage { width: w as usize, height: h as usize, data: buf }.write_png(path)
}

fn blit(buf: &mut [u8], stride_px: u32, img: &RgbImage, x: u32, y: u32) {
    let row_bytes = img.width * 3;
    for r in 0..img.height {
        let dst = ((y as usize + r) * stride_px as usize + x as usize) * 3;
        buf[dst..dst + row_bytes].copy_from_slice(&img.data[r * row_bytes..(r + 1) * row_bytes]);
    }
}

fn draw_text(
    buf: &mut [u8],
    size: (u32, u32),
    tiles: &[PanelTile],
    heading: &str,
    origin: &dyn Fn(usize) -> (u32, u32),
    cell_w: u32,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    if !heading.is_empty() {
        root.draw(&Text::new(heading.to_string(), (GAP as i32, 6), ("sans-serif", 20).into_font().color(&BLACK)))?;
    }
    // Titles longer than the cell are cut (with an ellipsis) so neighbours stay readable.
    let max_chars = (cell_w / 7).max(8) as usize;
    for (i, tile) in tiles.iter().enumerate() {
        let (x, y) = origin(i);
        for (l, line) in tile.title.iter().enumerate() {
            let text = if line.chars().count() > max_chars {
                format!("{}…", line.chars().take(max_chars - 1).collect::<String>())
            } else {
                line.clone()
            };
            let pos = (x as i32, (y + l as u32 * LINE) as i32);
            root.draw(&Text::new(text, pos, ("sans-serif", 14).into_font().color(&BLACK)))?;
        }
    }
    root.present()?;
    Ok(())
}
