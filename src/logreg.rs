//! L2-regularised multinomial logistic regression on frozen features, the transfer-learning
//! linear evaluation of the paper (App. D.2, following Kornblith et al. 2019): minimise
//! `mean cross-entropy + (λ/2)·‖W‖²` (bias unregularised) with L-BFGS (argmin's `LBFGS` with a
//! Moré–Thuente line search). λ is chosen from a list by fitting on the training set minus a
//! held-out slice and scoring top-1 on that slice; the final model is refit on the whole
//! training set with the chosen λ.

use crate::features::{check_labels, check_matrix, check_train_test, gather_rows, holdout_split, Standardizer};
use crate::linear_probe::pick;
use crate::scores::ClassScores;
use crate::softmax::{loss_and_grad, LinearModel};
use anyhow::{anyhow, ensure, Context, Result};
use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Logistic-regression hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRegConfig {
    /// Candidate L2 strengths λ; a single entry skips the selection.
    pub lambdas: Vec<f64>,
    /// Fraction of the training set held out to choose λ.
    pub holdout_fraction: f64,
    /// L-BFGS iteration cap per fit.
    pub max_iters: u64,
    /// L-BFGS history length.
    pub memory: usize,
    /// Stop when the gradient norm falls below this.
    pub tol_grad: f64,
    /// Standardise features with training-set mean/std first.
    pub standardize: bool,
    pub seed: u64,
}

impl Default for LogRegConfig {
    fn default() -> Self {
        Self {
            // Log-spaced, as App. D.2 (which searches 45 values in [1e-6, 1e5]); coarser here.
            lambdas: (-6..=2).map(|e| 10f64.powi(e)).collect(),
            holdout_fraction: 0.1,
            max_iters: 300,
            memory: 10,
            tol_grad: 1e-6,
            standardize: false,
            seed: 0,
        }
    }
}

/// Held-out score of one λ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LambdaTrial {
    pub lambda: f64,
    pub holdout_top1: f64,
    pub objective: f64,
}

/// Outcome of [`logistic_regression`].
#[derive(Clone, Debug)]
pub struct LogRegOutcome {
    pub model: LinearModel,
    pub best_lambda: f64,
    /// One entry per candidate λ (empty when there was a single candidate).
    pub sweep: Vec<LambdaTrial>,
    pub scores: ClassScores,
    pub predictions: Vec<usize>,
    pub top1: f64,
    pub top5: f64,
}

/// The regularised objective over packed parameters `[W (C×d) | b (C)]`, caching the last
/// evaluation because L-BFGS asks for cost and gradient at the same points.
struct Objective<'a> {
    x: &'a [f32],
    labels: &'a [usize],
    dim: usize,
    num_classes: usize,
    lambda: f64,
    threads: usize,
    cache: Mutex<Option<CachedEval>>,
}

/// Last evaluated point: (parameters, objective, gradient).
type CachedEval = (Vec<f64>, f64, Vec<f64>);

/// Packed `[W | b]` parameters as an `f32` model.
fn unpack(p: &[f64], dim: usize, num_classes: usize) -> LinearModel {
    let wlen = dim * num_classes;
    let mut m = LinearModel::zeros(dim, num_classes, None);
    m.weight = p[..wlen].iter().map(|&v| v as f32).collect();
    m.bias = p[wlen..].iter().map(|&v| v as f32).collect();
    m
}

impl Objective<'_> {
    fn eval(&self, p: &[f64]) -> Result<(f64, Vec<f64>)> {
        let mut cache = self.cache.lock().map_err(|_| anyhow!("logreg cache poisoned"))?;
        if let Some((cp, c, g)) = cache.as_ref() {
            if cp.as_slice() == p {
                return Ok((*c, g.clone()));
            }
        }
        let lg = loss_and_grad(self.x, self.labels, &unpack(p, self.dim, self.num_classes), self.threads)?;
        let wlen = self.dim * self.num_classes;
        let sq: f64 = p[..wlen].iter().map(|w| w * w).sum();
        let cost = lg.loss + 0.5 * self.lambda * sq;
        let mut grad: Vec<f64> = lg.grad_weight.iter().map(|&g| g as f64).collect();
        grad.iter_mut().zip(&p[..wlen]).for_each(|(g, w)| *g += self.lambda * w);
        grad.extend(lg.grad_bias.iter().map(|&g| g as f64));
        *cache = Some((p.to_vec(), cost, grad.clone()));
        Ok((cost, grad))
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(p)?.0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(p)?.1)
    }
}

/// Fits the λ-regularised model on (`train`, `labels`); returns it and the final objective.
/// `threads` goes to the GEMM (1 = calling thread, 0 = rayon).
pub fn fit_logreg(
    train: &[f32],
    labels: &[usize],
    dim: usize,
    num_classes: usize,
    lambda: f64,
    cfg: &LogRegConfig,
    threads: usize,
) -> Result<(LinearModel, f64)> {
    let n = check_matrix("logistic-regression train features", train, dim)?;
    check_labels("logistic-regression train labels", labels, n, num_classes)?;
    ensure!(n > 0, "logistic regression: the training set is empty");
    ensure!(lambda >= 0.0 && lambda.is_finite(), "logistic regression: bad λ {lambda}");
    let standardizer = cfg.standardize.then(|| Standardizer::fit(train, dim));
    let x = match &standardizer {
        Some(s) => s.apply(train),
        None => train.to_vec(),
    };
    let problem = Objective { x: &x, labels, dim, num_classes, lambda, threads, cache: Mutex::new(None) };
    let init = vec![0.0f64; dim * num_classes + num_classes];
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), cfg.memory.max(1))
        .with_tolerance_grad(cfg.tol_grad)?
        .with_tolerance_cost(0.0)?;
    let res = Executor::new(problem, solver)
        .configure(|s| s.param(init).max_iters(cfg.max_iters))
        .run()
        .with_context(|| format!("L-BFGS failed for logistic regression with λ = {lambda}"))?;
    let state = res.state();
    let best = state.get_best_param().ok_or_else(|| anyhow!("L-BFGS returned no parameters (λ = {lambda})"))?;
    let objective = state.get_best_cost();
    let mut model = unpack(best, dim, num_classes);
    model.standardizer = standardizer;
    Ok((model, objective))
}

/// Full protocol: λ selection on a held-out slice, refit on all of `train`, test top-1/top-5.
pub fn logistic_regression(
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    test_labels: &[usize],
    dim: usize,
    num_classes: usize,
    cfg: &LogRegConfig,
) -> Result<LogRegOutcome> {
    let (n, _) = check_train_test("logistic-regression", train, train_labels, test, test_labels, dim, num_classes)?;
    ensure!(!cfg.lambdas.is_empty(), "logistic regression: no λ to try");
    let mut sweep = Vec::new();
    let best_lambda = if cfg.lambdas.len() == 1 {
        cfg.lambdas[0]
    } else {
        let (fit, val) = holdout_split(n, cfg.holdout_fraction, cfg.seed)?;
        let (xf, yf) = (gather_rows(train, dim, &fit), pick(train_labels, &fit));
        let (xv, yv) = (gather_rows(train, dim, &val), pick(train_labels, &val));
        sweep = cfg
            .lambdas
            .par_iter()
            .map(|&lambda| -> Result<LambdaTrial> {
                let (m, objective) = fit_logreg(&xf, &yf, dim, num_classes, lambda, cfg, 1)?;
                Ok(LambdaTrial { lambda, holdout_top1: m.scores(&xv)?.top_k_accuracy(&yv, 1), objective })
            })
            .collect::<Result<Vec<_>>>()?;
        // Best held-out top-1; ties go to the stronger regularisation (simpler model).
        let mut best = &sweep[0];
        for t in &sweep[1..] {
            if t.holdout_top1 > best.holdout_top1 || (t.holdout_top1 == best.holdout_top1 && t.lambda > best.lambda) {
                best = t;
            }
        }
        best.lambda
    };
    let (model, _) = fit_logreg(train, train_labels, dim, num_classes, best_lambda, cfg, 0)?;
    let scores = model.scores(test)?;
    Ok(LogRegOutcome {
        predictions: scores.predictions(),
        top1: scores.top_k_accuracy(test_labels, 1),
        top5: scores.top_k_accuracy(test_labels, 5),
        model,
        best_lambda,
        sweep,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With strong regularisation the optimum satisfies ∇ = 0, i.e. W = −∇CE/λ; check that the
    /// returned model is stationary (the solver converged to the regularised optimum).
    #[test]
    fn solution_is_stationary() {
        let x = [1.0, 0.2, -0.5, 1.0, 0.3, -1.0, -1.0, 0.4];
        let y = [0, 1, 1, 0];
        let cfg = LogRegConfig { tol_grad: 1e-9, ..Default::default() };
        let (m, _) = fit_logreg(&x, &y, 2, 2, 0.1, &cfg, 1).unwrap();
        let lg = loss_and_grad(&x, &y, &m, 1).unwrap();
        for (g, w) in lg.grad_weight.iter().zip(&m.weight) {
            assert!((g + 0.1 * w).abs() < 1e-4, "not stationary: {g} + 0.1*{w}");
        }
        assert!(lg.grad_bias.iter().all(|g| g.abs() < 1e-4));
        assert!(m.weight.iter().any(|w| w.abs() > 1e-3), "model stayed at zero");
    }
}
