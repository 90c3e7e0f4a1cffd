//! Linear evaluation on frozen features (paper §4.1 and App. C.1): a linear softmax classifier
//! trained with mini-batch SGD, Nesterov momentum 0.9, a cosine learning-rate schedule and no
//! weight decay. The learning rate is chosen from a list by training on the training set minus
//! a held-out slice (10% by default) and scoring top-1 on that slice; the classifier is then
//! retrained with the best rate on the whole training set and evaluated on the test set.
//!
//! This works on precomputed features (center crops); the paper's per-epoch crop+flip
//! augmentation of the inputs needs the encoder and is left to the caller.

use crate::features::{check_labels, check_matrix, check_train_test, gather_rows, holdout_split, Standardizer};
use crate::scores::ClassScores;
use crate::softmax::{loss_and_grad, LinearModel};
use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Linear-probe hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearProbeConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Nesterov momentum (0.9 in App. C.1).
    pub momentum: f32,
    /// L2 weight decay on the weight matrix (0 in App. C.1).
    pub weight_decay: f32,
    /// Learning rates tried; a single entry skips the sweep.
    pub lr_candidates: Vec<f32>,
    /// Fraction of the training set held out to pick the learning rate.
    pub holdout_fraction: f64,
    /// Standardise features with training-set mean/std before the classifier.
    pub standardize: bool,
    pub seed: u64,
}

impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 256,
            momentum: 0.9,
            weight_decay: 0.0,
            lr_candidates: vec![0.01, 0.03, 0.1, 0.3, 1.0],
            holdout_fraction: 0.1,
            standardize: false,
            seed: 0,
        }
    }
}

/// Held-out score of one learning rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrTrial {
    pub lr: f32,
    pub holdout_top1: f64,
    pub final_train_loss: f64,
}

/// Outcome of [`linear_probe`].
#[derive(Clone, Debug)]
pub struct LinearProbeOutcome {
    pub model: LinearModel,
    pub best_lr: f32,
    /// One entry per candidate (empty when there was a single candidate).
    pub sweep: Vec<LrTrial>,
    pub scores: ClassScores,
    pub predictions: Vec<usize>,
    pub top1: f64,
    pub top5: f64,
}

/// Trains a linear classifier with learning rate `lr` on (`train`, `labels`).
/// Returns the model and the mean training loss of the last epoch.
pub fn train_linear(
    train: &[f32],
    labels: &[usize],
    dim: usize,
    num_classes: usize,
    lr: f32,
    cfg: &LinearProbeConfig,
) -> Result<(LinearModel, f64)> {
    let n = check_matrix("linear-probe train features", train, dim)?;
    check_labels("linear-probe train labels", labels, n, num_classes)?;
    ensure!(n > 0, "linear probe: the training set is empty");
    ensure!(cfg.epochs > 0 && cfg.batch_size > 0, "linear probe: epochs and batch size must be > 0");
    ensure!(lr.is_finite() && lr > 0.0, "linear probe: learning rate must be positive, got {lr}");
    let standardizer = cfg.standardize.then(|| Standardizer::fit(train, dim));
    let x = match &standardizer {
        Some(s) => s.apply(train),
        None => train.to_vec(),
    };
    let mut model = LinearModel::zeros(dim, num_classes, standardizer);
    let mut sgd = SgdState::new(&model, n, cfg);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut last_epoch_loss = 0.0;
    for _ in 0..cfg.epochs {
        order.shuffle(&mut rng);
        last_epoch_loss = sgd_epoch(&x, labels, &order, &mut model, &mut sgd, lr, cfg)?;
    }
    Ok((model, last_epoch_loss))
}

/// Momentum buffers and step count of the probe's mini-batch SGD (cosine lr over all steps).
pub struct SgdState {
    vel_w: Vec<f32>,
    vel_b: Vec<f32>,
    step: usize,
    total: f64,
}

impl SgdState {
    /// Fresh state for `cfg.epochs` epochs over `n` samples.
    pub fn new(model: &LinearModel, n: usize, cfg: &LinearProbeConfig) -> Self {
        Self {
            vel_w: vec![0.0; model.weight.len()],
            vel_b: vec![0.0; model.bias.len()],
            step: 0,
            total: (cfg.epochs * n.div_ceil(cfg.batch_size)) as f64,
        }
    }
}

/// One epoch of mini-batch softmax regression in `order`: SGD with Nesterov momentum (PyTorch
/// convention v ← μv + g; p ← p − lr·(g + μv)), cosine lr per step, optional weight decay.
/// `x` is already standardised. Returns the mean loss; a non-finite loss is an error.
pub fn sgd_epoch(
    x: &[f32],
    labels: &[usize],
    order: &[usize],
    model: &mut LinearModel,
    sgd: &mut SgdState,
    lr: f32,
    cfg: &LinearProbeConfig,
) -> Result<f64> {
    let mu = cfg.momentum;
    let mut epoch_loss = 0.0;
    for batch in order.chunks(cfg.batch_size) {
        let xb = gather_rows(x, model.dim, batch);
        let yb: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
        let mut lg = loss_and_grad(&xb, &yb, model, 1)?;
        epoch_loss += lg.loss * batch.len() as f64;
        let lr_t = (lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * sgd.step as f64 / sgd.total).cos())) as f32;
        if cfg.weight_decay != 0.0 {
            lg.grad_weight.iter_mut().zip(&model.weight).for_each(|(g, w)| *g += cfg.weight_decay * w);
        }
        for (param, vel, grad) in
            [(&mut model.weight, &mut sgd.vel_w, &lg.grad_weight), (&mut model.bias, &mut sgd.vel_b, &lg.grad_bias)]
        {
            for ((p, v), g) in param.iter_mut().zip(vel.iter_mut()).zip(grad) {
                *v = mu * *v + g;
                *p -= lr_t * (g + mu * *v);
            }
        }
        sgd.step += 1;
    }
    let mean = epoch_loss / order.len() as f64;
    ensure!(mean.is_finite(), "linear probe diverged (non-finite loss) with learning rate {lr}");
    Ok(mean)
}

/// Full linear evaluation: learning-rate sweep on a held-out slice of `train`, retraining on all
/// of `train` with the best rate, and top-1/top-5 on (`test`, `test_labels`).
pub fn linear_probe(
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    test_labels: &[usize],
    dim: usize,
    num_classes: usize,
    cfg: &LinearProbeConfig,
) -> Result<LinearProbeOutcome> {
    let (n, _) = check_train_test("linear-probe", train, train_labels, test, test_labels, dim, num_classes)?;
    ensure!(!cfg.lr_candidates.is_empty(), "linear probe: no learning rate to try");
    let mut sweep = Vec::new();
    let best_lr = if cfg.lr_candidates.len() == 1 {
        cfg.lr_candidates[0]
    } else {
        let (fit, val) = holdout_split(n, cfg.holdout_fraction, cfg.seed)?;
        let (xf, yf) = (gather_rows(train, dim, &fit), pick(train_labels, &fit));
        let (xv, yv) = (gather_rows(train, dim, &val), pick(train_labels, &val));
        sweep = cfg
            .lr_candidates
            .par_iter()
            .map(|&lr| -> Result<LrTrial> {
                match train_linear(&xf, &yf, dim, num_classes, lr, cfg) {
                    Ok((m, loss)) => {
                        Ok(LrTrial { lr, holdout_top1: m.scores(&xv)?.top_k_accuracy(&yv, 1), final_train_loss: loss })
                    }
                    // A diverging rate is a legitimate sweep outcome, not a failure.
                    Err(_) => Ok(LrTrial { lr, holdout_top1: 0.0, final_train_loss: f64::INFINITY }),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        best_of(&sweep)
    };
    let (model, _) = train_linear(train, train_labels, dim, num_classes, best_lr, cfg)
        .with_context(|| format!("linear probe: retraining with the chosen lr {best_lr}"))?;
    let scores = model.scores(test)?;
    Ok(LinearProbeOutcome {
        predictions: scores.predictions(),
        top1: scores.top_k_accuracy(test_labels, 1),
        top5: scores.top_k_accuracy(test_labels, 5),
        model,
        best_lr,
        sweep,
        scores,
    })
}

/// Best held-out top-1; ties go to the lower training loss, then to the earlier candidate.
fn best_of(sweep: &[LrTrial]) -> f32 {
    let mut best = &sweep[0];
    for t in &sweep[1..] {
        if t.holdout_top1 > best.holdout_top1
            || (t.holdout_top1 == best.holdout_top1 && t.final_train_loss < best.final_train_loss)
        {
            best = t;
        }
    }
    best.lr
}

pub(crate) fn pick(labels: &[usize], idx: &[usize]) -> Vec<usize> {
    idx.iter().map(|&i| labels[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_two_points_are_learned_and_seeded() {
        let x = [1.0, 0.0, 0.0, 1.0, 0.9, 0.1, 0.1, 0.9];
        let y = [0, 1, 0, 1];
        let cfg = LinearProbeConfig { epochs: 50, batch_size: 2, ..Default::default() };
        let (m, loss) = train_linear(&x, &y, 2, 2, 0.5, &cfg).unwrap();
        assert!(loss < 0.1, "loss {loss}");
        assert_eq!(m.scores(&x).unwrap().predictions(), vec![0, 1, 0, 1]);
        let (m2, _) = train_linear(&x, &y, 2, 2, 0.5, &cfg).unwrap();
        assert_eq!(m, m2);
        assert!(train_linear(&x, &y, 2, 2, -1.0, &cfg).is_err());
    }
}
