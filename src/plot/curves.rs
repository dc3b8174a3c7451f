//! Training curves: train and validation loss, and validation mean AUROC with the best point
//! marked, against the optimizer step.

use super::write_png_atomic;
use crate::error::Result;
use plotters::prelude::*;
use std::path::Path;

/// One logged validation point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub step: u64,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_auroc: Option<f64>,
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// Writes a 2-panel PNG (loss | AUROC) of `points` to `path`.
pub fn training_curves(path: &Path, points: &[CurvePoint]) -> Result<()> {
    write_png_atomic(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1200, 450)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let last_step = points.last().map_or(1, |p| p.step).max(1);

        let (lo, hi) = range(points.iter().flat_map(|p| [Some(p.train_loss), p.val_loss]).flatten());
        let mut loss = ChartBuilder::on(&left)
            .caption("Loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0u64..last_step, lo..hi)?;
        loss.configure_mesh().x_desc("step").y_desc("BCE loss").light_line_style(WHITE.mix(0.0)).draw()?;
        let train: Vec<(u64, f64)> = points.iter().map(|p| (p.step, p.train_loss)).collect();
        loss.draw_series(LineSeries::new(train, BLUE.stroke_width(2)))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        let val: Vec<(u64, f64)> = points.iter().filter_map(|p| p.val_loss.map(|v| (p.step, v))).collect();
        loss.draw_series(LineSeries::new(val, RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        loss.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;

        let aurocs: Vec<(u64, f64)> = points.iter().filter_map(|p| p.val_auroc.map(|a| (p.step, a))).collect();
        let (lo, hi) = range(aurocs.iter().map(|a| a.1));
        let mut auc = ChartBuilder::on(&right)
            .caption("Validation mean AUROC", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0u64..last_step, lo.max(0.0)..hi.min(1.0).max(lo.max(0.0) + 1e-3))?;
        auc.configure_mesh().x_desc("step").y_desc("AUROC").light_line_style(WHITE.mix(0.0)).draw()?;
        auc.draw_series(LineSeries::new(aurocs.clone(), RGBColor(0, 140, 60).stroke_width(2)))?;
        if let Some(&(step, best)) = aurocs.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            let label = format!("best {best:.3} at step {step}");
            let anchor = if step * 2 > last_step { (-170, 12) } else { (10, 12) };
            auc.draw_series(std::iter::once(
                EmptyElement::at((step, best))
                    + Circle::new((0, 0), 6, RED.filled())
                    + Text::new(label, anchor, ("sans-serif", 16).into_font()),
            ))?;
        }
        root.present()?;
        Ok(())
    })
}
