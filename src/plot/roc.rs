//! The ROC grid: one panel per finding (2 rows of 7 for the 14 findings), each with its curve,
//! the chance diagonal, the AUROC in the legend and the Youden point marked, as the ResNet18
//! workshop draws it. A class without both labels gets an empty panel saying why.

use super::write_png_atomic;
use crate::error::Result;
use crate::metrics::ClassReport;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Panels per row.
const COLUMNS: usize = 7;
const PANEL: (u32, u32) = (300, 330);

/// Rows and columns of a grid holding `n` panels.
pub(crate) fn grid_shape(n: usize) -> (usize, usize) {
    let columns = n.clamp(1, COLUMNS);
    (n.div_ceil(columns).max(1), columns)
}

/// Writes the ROC grid of `classes` to `path` (PNG).
pub fn roc_grid(path: &Path, classes: &[ClassReport]) -> Result<()> {
    let (rows, columns) = grid_shape(classes.len());
    write_png_atomic(path, |tmp| {
        let root = BitMapBackend::new(tmp, (PANEL.0 * columns as u32, PANEL.1 * rows as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        for (panel, class) in root.split_evenly((rows, columns)).iter().zip(classes) {
            roc_panel(panel, class)?;
        }
        root.present()?;
        Ok(())
    })
}

fn roc_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    class: &ClassReport,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(&class.name, ("sans-serif", 17))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(38)
        .build_cartesian_2d(0.0f64..1.0, 0.0f64..1.0)?;
    chart
        .configure_mesh()
        .x_labels(3)
        .y_labels(3)
        .x_desc("1 - specificity")
        .y_desc("sensitivity")
        .axis_desc_style(("sans-serif", 12))
        .label_style(("sans-serif", 11))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart.draw_series(DashedLineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], 4, 4, RGBColor(150, 150, 150).into()))?;
    let (Some(roc), Some(auroc)) = (&class.roc, class.auroc) else {
        let why = if class.positives == 0 { "no positives" } else { "no negatives" };
        chart.draw_series(std::iter::once(Text::new(
            format!("skipped: {why}"),
            (0.2, 0.55),
            ("sans-serif", 15).into_font().color(&RED),
        )))?;
        return Ok(());
    };
    let points: Vec<(f64, f64)> = roc.fpr.iter().copied().zip(roc.tpr.iter().copied()).collect();
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?
        .label(format!("AUC = {auroc:.3}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
    if let Some(y) = class.youden.filter(|y| y.threshold.is_finite()) {
        chart
            .draw_series(std::iter::once(Circle::new((y.fpr, y.tpr), 5, RED.filled())))?
            .label(format!("Youden t = {:.3}", y.threshold))
            .legend(|(x, y)| Circle::new((x + 8, y), 4, RED.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 13))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    Ok(())
}
