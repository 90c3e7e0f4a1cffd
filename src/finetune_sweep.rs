//! The learning-rate sweep of semi-supervised fine-tuning (paper App. C.2, with the held-out
//! protocol of App. C.1): every candidate rate fine-tunes the pretrained network on the labelled
//! subset minus a seeded, class-balanced held-out slice and is scored by top-1 on that slice; the
//! best rate is then used to fine-tune on the whole labelled subset. A rate whose training loss
//! becomes non-finite is recorded as a failed trial, not an error.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// Peak learning rates tried by default: the paper's App. C.2 grid {0.005, 0.01, 0.02, 0.05,
/// 0.1}, used as given (no batch-size scaling).
pub const DEFAULT_LRS: &str = "0.005,0.01,0.02,0.05,0.1";

/// One learning rate of the sweep and how it did on the held-out slice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneTrial {
    pub lr: f64,
    /// Top-1 on the held-out slice; `None` (JSON null) when the trial failed.
    pub holdout_top1: Option<f64>,
    /// Mean training loss of the last epoch; `None` when the trial failed.
    pub final_train_loss: Option<f64>,
    /// Why the trial failed (divergence), `None` when it succeeded.
    pub failed: Option<String>,
}

/// Training with one rate produced a non-finite loss (or non-finite weights).
#[derive(Debug, Clone, PartialEq)]
pub struct Diverged {
    pub lr: f64,
    /// 1-based epoch.
    pub epoch: usize,
    /// 0-based optimizer step.
    pub step: usize,
    pub loss: f32,
}

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fine-tuning with lr {} diverged (loss {}) at epoch {} step {}",
            self.lr, self.loss, self.epoch, self.step
        )
    }
}

impl std::error::Error for Diverged {}

/// Checks the `--lrs` list: at least one value, every value finite and positive.
pub fn check_lrs(lrs: &[f64]) -> Result<()> {
    ensure!(!lrs.is_empty(), "--lrs: no learning rate given");
    if let Some(bad) = lrs.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
        bail!("--lrs: every learning rate must be a positive number, got {bad}");
    }
    Ok(())
}

/// Splits positions `0..labels.len()` into (fit, held out), class by class: each class with
/// `m ≥ 2` members holds out `round(fraction·m)` of them (at least 1, at most `m − 1`), drawn
/// with a shuffle seeded by `seed`; single-member classes stay in the fit part. Both parts are
/// sorted. Errors when `fraction` is outside (0, 1) or nothing can be held out.
pub fn balanced_holdout(labels: &[usize], fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    ensure!(fraction > 0.0 && fraction < 1.0, "--holdout must be in (0, 1), got {fraction}");
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let (mut fit, mut val) = (Vec::new(), Vec::new());
    for members in crate::label_subset::shuffled_by_class(labels, classes, seed) {
        let m = members.len();
        let k = if m < 2 { 0 } else { ((fraction * m as f64).round() as usize).clamp(1, m - 1) };
        val.extend_from_slice(&members[..k]);
        fit.extend_from_slice(&members[k..]);
    }
    ensure!(
        !val.is_empty(),
        "cannot hold out part of {} labelled images for the lr sweep: no class has 2 images; \
         use more labels or a single --lrs value",
        labels.len()
    );
    fit.sort_unstable();
    val.sort_unstable();
    Ok((fit, val))
}

/// The index of the best trial: highest held-out top-1, ties to the lower final training loss,
/// then to the earlier candidate. Errors (listing the failures) when every trial failed.
pub fn best_trial(trials: &[FinetuneTrial]) -> Result<usize> {
    let mut best: Option<(usize, f64, f64)> = None;
    for (i, t) in trials.iter().enumerate() {
        let (Some(acc), Some(loss)) = (t.holdout_top1, t.final_train_loss) else { continue };
        if best.is_none_or(|(_, ba, bl)| acc > ba || (acc == ba && loss < bl)) {
            best = Some((i, acc, loss));
        }
    }
    match best {
        Some((i, _, _)) => Ok(i),
        None => {
            let why: Vec<String> = trials.iter().filter_map(|t| t.failed.clone()).collect();
            bail!("every learning rate of the sweep failed: {}", why.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(lr: f64, acc: f64, loss: f64) -> FinetuneTrial {
        FinetuneTrial { lr, holdout_top1: Some(acc), final_train_loss: Some(loss), failed: None }
    }

    fn failed(lr: f64) -> FinetuneTrial {
        FinetuneTrial { lr, holdout_top1: None, final_train_loss: None, failed: Some(format!("lr {lr} diverged")) }
    }

    #[test]
    fn best_trial_skips_failures_and_breaks_ties_by_loss() {
        assert_eq!(best_trial(&[failed(9.0), ok(0.1, 0.5, 1.0), ok(0.2, 0.7, 2.0)]).unwrap(), 2);
        assert_eq!(best_trial(&[ok(0.1, 0.7, 1.0), ok(0.2, 0.7, 0.5), ok(0.3, 0.7, 0.5)]).unwrap(), 1);
        let err = best_trial(&[failed(9.0), failed(8.0)]).unwrap_err().to_string();
        assert!(err.contains("lr 9 diverged") && err.contains("lr 8 diverged"), "{err}");
    }

    #[test]
    fn holdout_is_class_balanced_seeded_and_disjoint() {
        // Class 0: 10 members, class 1: 5, class 2: 1 (never held out).
        let labels: Vec<usize> = [vec![0; 10], vec![1; 5], vec![2]].concat();
        let (fit, val) = balanced_holdout(&labels, 0.2, 7).unwrap();
        let count = |idx: &[usize], c: usize| idx.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!([count(&val, 0), count(&val, 1), count(&val, 2)], [2, 1, 0]);
        assert_eq!(fit.len() + val.len(), labels.len());
        assert!(val.iter().all(|i| !fit.contains(i)));
        assert_eq!(balanced_holdout(&labels, 0.2, 7).unwrap(), (fit.clone(), val.clone()));
        assert_ne!(balanced_holdout(&labels, 0.2, 8).unwrap().1, val);
        assert!(balanced_holdout(&labels, 1.0, 7).is_err());
        assert!(balanced_holdout(&labels, 0.0, 7).is_err());
        assert!(balanced_holdout(&[0, 1, 2], 0.5, 7).unwrap_err().to_string().contains("no class has 2"));
    }

    #[test]
    fn lrs_must_be_positive_and_finite() {
        assert!(check_lrs(&[0.01, 0.1]).is_ok());
        for bad in [vec![], vec![0.0], vec![0.1, -1.0], vec![f64::NAN], vec![f64::INFINITY]] {
            assert!(check_lrs(&bad).is_err(), "{bad:?}");
        }
    }
}
