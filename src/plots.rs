//! Training-curve figures written by `byol pretrain` every epoch: one panel per metric (loss,
//! learning rate, EMA τ of §3.1, kNN / online-probe accuracy, …) against step or epoch, each
//! with its own y range, so a collapsing run (BYOL.md "What users trip over") is visible early.

use crate::plot_canvas::{draw_err, render_png, FONT};
use anyhow::{ensure, Result};
use plotters::prelude::*;
use std::path::Path;

/// One named curve: `(x, y)` points in drawing order; non-finite points are skipped.
pub type Series = (String, Vec<(f64, f64)>);

/// Writes a PNG with one panel per series (two columns), titled `title`, x axis `x_label`.
pub fn plot_curves(path: &Path, title: &str, x_label: &str, series: &[Series]) -> Result<()> {
    ensure!(!series.is_empty(), "plot {}: no series to draw", path.display());
    let cols = series.len().min(2);
    let rows = series.len().div_ceil(cols);
    let (w, h) = (520 * cols as u32, 60 + 340 * rows as u32);
    render_png(path, w, h, |root| {
        let (top, body) = root.split_vertically(50);
        top.titled(title, (FONT, 26).into_font()).map_err(draw_err)?;
        let panels = body.split_evenly((rows, cols));
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            draw_panel(&panels[i], name, x_label, points, color)?;
        }
        Ok(())
    })
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    name: &str,
    x_label: &str,
    points: &[(f64, f64)],
    color: RGBAColor,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let pts: Vec<(f64, f64)> = points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    let (xr, yr) = ranges(&pts);
    let mut chart = ChartBuilder::on(area)
        .caption(name, (FONT, 20).into_font())
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .label_style((FONT, 13).into_font())
        .axis_desc_style((FONT, 14).into_font())
        .y_label_formatter(&|v| format_tick(*v))
        .x_label_formatter(&|v| format_tick(*v))
        .draw()
        .map_err(draw_err)?;
    if pts.is_empty() {
        let style = (FONT, 18).into_font().color(&RED);
        area.draw_text("no data", &style, (40, 60)).map_err(draw_err)?;
        return Ok(());
    }
    chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2))).map_err(draw_err)?;
    if pts.len() <= 60 {
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(draw_err)?;
    }
    Ok(())
}

/// Data bounds with a margin; a degenerate (single-valued) range is widened.
fn ranges(pts: &[(f64, f64)]) -> ((f64, f64), (f64, f64)) {
    if pts.is_empty() {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let bound = |vals: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 * lo.abs().max(1e-3) };
        (lo - pad, hi + pad)
    };
    (bound(&mut pts.iter().map(|p| p.0)), bound(&mut pts.iter().map(|p| p.1)))
}

/// Short tick labels: plain decimals for ordinary magnitudes, scientific notation otherwise.
fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_ranges() {
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(1500.0), "1500");
        assert_eq!(format_tick(1e-5), "1.0e-5");
        assert_eq!(ranges(&[(1.0, 2.0)]).1, (1.0, 3.0));
        let ((x0, x1), _) = ranges(&[(0.0, 0.0), (10.0, 1.0)]);
        assert!(x0 < 0.0 && x1 > 10.0);
    }
}
