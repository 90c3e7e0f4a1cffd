//! `metrics.jsonl` of a run: one JSON object per logged step (loss, lr, τ, images/s, collapse
//! statistic, online-probe accuracy) and per evaluated epoch (kNN top-1/top-5), plus the PNG
//! curves drawn from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: usize,
    pub epoch: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tau: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub images_per_s: Option<f64>,
    /// Std of L2-normalised projections (≈ 1/√d healthy, → 0 on collapse).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub z_std: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub probe_acc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub knn_top1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub knn_top5: Option<f64>,
}

impl Record {
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        step: usize,
        epoch: usize,
        loss: f32,
        lr: f64,
        tau: f64,
        ips: f64,
        z_std: f32,
        probe: Option<f64>,
    ) -> Self {
        Self {
            step,
            epoch,
            loss: Some(loss),
            lr: Some(lr),
            tau: Some(tau),
            images_per_s: Some(ips),
            z_std: Some(z_std),
            probe_acc: probe,
            ..Default::default()
        }
    }
    pub fn epoch(step: usize, epoch: usize, top1: f64, top5: f64, probe: Option<f64>) -> Self {
        Self { step, epoch, knn_top1: Some(top1), knn_top5: Some(top5), probe_acc: probe, ..Default::default() }
    }
}

/// The metrics file of a run, with its records in memory.
pub struct MetricsLog {
    /// The metrics file; `None` for a log kept in memory only.
    path: Option<PathBuf>,
    pub records: Vec<Record>,
}

impl MetricsLog {
    /// Opens (and reads) the file; a missing file is an empty log.
    pub fn open(path: &Path) -> Result<Self> {
        let mut records = Vec::new();
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                records.push(
                    serde_json::from_str(line)
                        .with_context(|| format!("{} line {}: not a metrics record", path.display(), i + 1))?,
                );
            }
        }
        Ok(Self { path: Some(path.to_path_buf()), records })
    }

    /// A log kept in memory only (data-parallel ranks other than 0 write no files).
    pub fn in_memory() -> Self {
        Self { path: None, records: Vec::new() }
    }

    /// Appends one record (flushed at once, so a killed run keeps what it logged).
    pub fn write(&mut self, r: &Record) -> Result<()> {
        if let Some(path) = &self.path {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            writeln!(f, "{}", serde_json::to_string(r)?).with_context(|| format!("cannot write {}", path.display()))?;
        }
        self.records.push(r.clone());
        Ok(())
    }

    fn rewrite(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut text = String::new();
        for r in &self.records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        crate::fsutil::write_atomic(path, text.as_bytes())
    }

    /// Drops every record after `step` (resume from a checkpoint at `step`).
    pub fn truncate_after(&mut self, step: usize) -> Result<()> {
        self.records.retain(|r| r.step <= step);
        self.rewrite()
    }

    /// Empties the log (a fresh run).
    pub fn clear(&mut self) -> Result<()> {
        self.records.clear();
        self.rewrite()
    }

    /// kNN top-1 of the first evaluation (random init) if logged.
    pub fn first_knn(&self) -> Option<f64> {
        self.records.iter().find(|r| r.step == 0).and_then(|r| r.knn_top1)
    }

    /// Per-step losses in order (used by the resume test).
    pub fn losses(&self) -> Vec<(usize, f32)> {
        self.records.iter().filter_map(|r| r.loss.map(|l| (r.step, l))).collect()
    }

    /// Draws the curves of the run into a PNG.
    pub fn plot(&self, path: &Path) -> Result<()> {
        let pick = |f: &dyn Fn(&Record) -> Option<f64>| -> Vec<(f64, f64)> {
            self.records.iter().filter_map(|r| f(r).map(|v| (r.step as f64, v))).collect()
        };
        let mut series: Vec<crate::plots::Series> = vec![
            ("loss".into(), pick(&|r| r.loss.map(f64::from))),
            ("learning rate".into(), pick(&|r| r.lr)),
            ("tau".into(), pick(&|r| r.tau)),
            ("std of normalised z".into(), pick(&|r| r.z_std.map(f64::from))),
        ];
        let knn = pick(&|r| r.knn_top1.map(|v| v * 100.0));
        if !knn.is_empty() {
            series.push(("kNN top-1 %".into(), knn));
        }
        let probe = pick(&|r| r.probe_acc.map(|v| v * 100.0));
        if !probe.is_empty() {
            series.push(("online probe accuracy %".into(), probe));
        }
        series.retain(|s| !s.1.is_empty());
        if series.is_empty() {
            return Ok(());
        }
        crate::plots::plot_curves(path, "BYOL pretraining", "step", &series)
    }
}
