//! Evaluation reports (kNN, linear probe, logistic regression, fine-tuning; App. C/D): a JSON
//! file with the method, top-1/top-5 accuracy, per-class accuracy, the confusion matrix and the
//! parameters used, plus a confusion-matrix PNG.

use crate::plot_canvas::{draw_err, render_png, FONT};
use crate::scores::ClassScores;
use anyhow::{ensure, Context, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The record of one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// e.g. "knn", "linear", "logreg", "finetune".
    pub method: String,
    pub num_samples: usize,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub top1: f64,
    pub top5: f64,
    /// Recall of each class; `None` (JSON null) for classes with no test sample.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// `confusion[true][predicted]` sample counts.
    pub confusion: Vec<Vec<u64>>,
    /// Free-form parameters (k, T, chosen lr, seed, checkpoint, …).
    pub params: serde_json::Value,
}

impl EvalReport {
    /// Builds the report from class scores and true labels. `class_names` may be empty
    /// (indices are used) or hold one name per class.
    pub fn from_scores(
        method: &str,
        scores: &ClassScores,
        labels: &[usize],
        class_names: &[String],
        params: serde_json::Value,
    ) -> Result<Self> {
        let c = scores.num_classes;
        ensure!(labels.len() == scores.n, "report: {} labels for {} scored samples", labels.len(), scores.n);
        ensure!(
            class_names.is_empty() || class_names.len() == c,
            "report: {} class names for {c} classes",
            class_names.len()
        );
        if let Some(&bad) = labels.iter().find(|&&l| l >= c) {
            anyhow::bail!("report: label {bad} is not below the class count {c}");
        }
        let preds = scores.predictions();
        let mut confusion = vec![vec![0u64; c]; c];
        for (&y, &p) in labels.iter().zip(&preds) {
            confusion[y][p] += 1;
        }
        let per_class_accuracy = confusion
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let total: u64 = row.iter().sum();
                (total > 0).then(|| row[i] as f64 / total as f64)
            })
            .collect();
        let class_names =
            if class_names.is_empty() { (0..c).map(|i| i.to_string()).collect() } else { class_names.to_vec() };
        Ok(Self {
            method: method.to_string(),
            num_samples: scores.n,
            num_classes: c,
            class_names,
            top1: scores.top_k_accuracy(labels, 1),
            top5: scores.top_k_accuracy(labels, 5),
            per_class_accuracy,
            confusion,
            params,
        })
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing report {}", path.display()))
    }

    /// Reads a report written by [`write_json`](Self::write_json).
    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading report {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not an evaluation report", path.display()))
    }

    /// Side length in pixels of the confusion-matrix PNG written by
    /// [`write_confusion_png`](Self::write_confusion_png).
    pub fn confusion_png_size(&self) -> (u32, u32) {
        let grid = confusion_cell(self.num_classes) * self.num_classes as u32;
        (grid + 170, grid + 150)
    }

    /// Draws the row-normalised confusion matrix (colour = fraction of the true class, counts
    /// written in the cells for up to 30 classes, class names on the axes for up to 40).
    pub fn write_confusion_png(&self, path: &Path) -> Result<()> {
        let c = self.num_classes;
        let (w, h) = self.confusion_png_size();
        let title = format!("{}: top-1 {:.2}%, top-5 {:.2}%", self.method, 100.0 * self.top1, 100.0 * self.top5);
        render_png(path, w, h, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(title, (FONT, 20).into_font())
                .margin(10)
                .x_label_area_size(60)
                .y_label_area_size(110)
                // Plotters' integer ranges are inclusive for segmentation: 0..c-1 gives c cells.
                .build_cartesian_2d((0..c - 1).into_segmented(), (0..c - 1).into_segmented())
                .map_err(draw_err)?;
            let show_names = c <= 40;
            // Full names where cells are wide enough, class indices otherwise.
            let names: Vec<String> = if confusion_cell(c) >= 60 {
                self.class_names.iter().map(|n| short(n)).collect()
            } else {
                (0..c).map(|i| i.to_string()).collect()
            };
            // Row i (true class) is drawn at y = c-1-i so class 0 is at the top.
            let xfmt = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(j) if show_names && *j < c => names[*j].clone(),
                _ => String::new(),
            };
            let yfmt = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(j) if show_names && *j < c => names[c - 1 - *j].clone(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(c.min(40))
                .y_labels(c.min(40))
                .x_desc("predicted")
                .y_desc("true")
                .label_style((FONT, 12).into_font())
                .axis_desc_style((FONT, 14).into_font())
                .x_label_formatter(&xfmt)
                .y_label_formatter(&yfmt)
                .draw()
                .map_err(draw_err)?;
            let cells = (0..c).flat_map(|i| (0..c).map(move |j| (i, j)));
            chart
                .draw_series(cells.clone().map(|(i, j)| {
                    let frac = self.row_fraction(i, j);
                    let y = c - 1 - i;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                        ],
                        heat(frac).filled(),
                    )
                }))
                .map_err(draw_err)?;
            if c <= 30 {
                let size = (confusion_cell(c) as f64 * 0.3).clamp(9.0, 16.0);
                chart
                    .draw_series(cells.map(|(i, j)| {
                        let color: &'static RGBColor = if self.row_fraction(i, j) > 0.5 { &WHITE } else { &BLACK };
                        let style = TextStyle::from((FONT, size).into_font())
                            .color(color)
                            .pos(Pos::new(HPos::Center, VPos::Center));
                        let at = (SegmentValue::CenterOf(j), SegmentValue::CenterOf(c - 1 - i));
                        Text::new(self.confusion[i][j].to_string(), at, style)
                    }))
                    .map_err(draw_err)?;
            }
            Ok(())
        })
    }

    fn row_fraction(&self, i: usize, j: usize) -> f64 {
        let total: u64 = self.confusion[i].iter().sum();
        if total == 0 {
            0.0
        } else {
            self.confusion[i][j] as f64 / total as f64
        }
    }
}

/// Pixels per confusion cell: large for few classes, at least 1 for ImageNet's 1000.
fn confusion_cell(c: usize) -> u32 {
    ((800 / c.max(1)) as u32).clamp(1, 60)
}

/// White (0) to dark blue (1).
fn heat(frac: f64) -> RGBColor {
    let t = frac.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0))
}

/// Axis label: at most 12 characters.
fn short(name: &str) -> String {
    if name.chars().count() <= 12 {
        name.to_string()
    } else {
        name.chars().take(11).chain(std::iter::once('…')).collect()
    }
}
