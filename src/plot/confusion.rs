//! Confusion matrix heatmaps: one 2x2 panel per finding (actual rows, predicted columns, as
//! sklearn's `multilabel_confusion_matrix` lays them out), shaded by the share of the actual
//! class that lands in each cell and annotated with the count, in the same grid as the ROC
//! figure.

use super::roc::grid_shape;
use super::write_png_atomic;
use crate::error::Result;
use crate::metrics::ClassReport;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const PANEL: (u32, u32) = (260, 250);

/// Writes the confusion matrix grid of `classes` to `path` (PNG).
pub fn confusion_grid(path: &Path, classes: &[ClassReport]) -> Result<()> {
    let (rows, columns) = grid_shape(classes.len());
    write_png_atomic(path, |tmp| {
        let root = BitMapBackend::new(tmp, (PANEL.0 * columns as u32, PANEL.1 * rows as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        for (panel, class) in root.split_evenly((rows, columns)).iter().zip(classes) {
            confusion_panel(panel, class)?;
        }
        root.present()?;
        Ok(())
    })
}

/// White to dark blue as `share` goes from 0 to 1.
fn shade(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let mix = |light: f64, dark: f64| (light + (dark - light) * s).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

fn confusion_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    class: &ClassReport,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let title = format!("{} (t = {:.3})", class.name, class.threshold);
    area.draw(&Text::new(title, (12, 8), ("sans-serif", 15).into_font()))?;
    let m = &class.confusion;
    // [actual][predicted]: rows negative, positive; columns negative, positive.
    let cells = [[m.tn, m.fp], [m.fn_, m.tp]];
    let (left, top, cell) = (70i32, 52i32, 80i32);
    let label = ("sans-serif", 13).into_font();
    for (r, row) in cells.iter().enumerate() {
        let actual_total: u64 = row.iter().sum();
        for (c, &count) in row.iter().enumerate() {
            let share = if actual_total == 0 { 0.0 } else { count as f64 / actual_total as f64 };
            let (x, y) = (left + c as i32 * cell, top + r as i32 * cell);
            area.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], shade(share).filled()))?;
            area.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], BLACK.stroke_width(1)))?;
            let ink = if share > 0.5 { WHITE } else { BLACK };
            let text = count.to_string();
            let dx = 4 * text.len() as i32;
            area.draw(&Text::new(
                text,
                (x + cell / 2 - dx, y + cell / 2 - 9),
                ("sans-serif", 18).into_font().color(&ink),
            ))?;
        }
        let name = if r == 0 { "neg" } else { "pos" };
        area.draw(&Text::new(name, (left - 30, top + r as i32 * cell + cell / 2 - 7), label.clone()))?;
        let name = if r == 0 { "neg" } else { "pos" };
        area.draw(&Text::new(name, (left + r as i32 * cell + cell / 2 - 10, top - 18), label.clone()))?;
    }
    area.draw(&Text::new("predicted", (left + cell - 28, top + 2 * cell + 6), label.clone()))?;
    area.draw(&Text::new("actual", (6, top + cell - 7), label))?;
    Ok(())
}
