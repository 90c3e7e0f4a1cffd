//! A linear classifier `logits = x·Wᵀ + b` on frozen features and its softmax cross-entropy
//! loss and gradient, shared by the SGD linear probe (App. C.1) and the L-BFGS logistic
//! regression (App. D.2).

use crate::dense::{matmul, matmul_into, MatRef};
use crate::features::{check_matrix, Standardizer};
use crate::scores::ClassScores;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Weights of a linear classifier over `dim`-wide features, with the optional feature
/// standardisation fitted on its training set (applied before the product).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    pub dim: usize,
    pub num_classes: usize,
    /// `num_classes × dim`, row-major.
    pub weight: Vec<f32>,
    /// `num_classes`.
    pub bias: Vec<f32>,
    pub standardizer: Option<Standardizer>,
}

impl LinearModel {
    /// All-zero weights (the loss is convex, so zero is a fine, deterministic start).
    pub fn zeros(dim: usize, num_classes: usize, standardizer: Option<Standardizer>) -> Self {
        Self { dim, num_classes, weight: vec![0.0; dim * num_classes], bias: vec![0.0; num_classes], standardizer }
    }

    /// Logits for every row of `features` (raw, not yet standardised).
    pub fn scores(&self, features: &[f32]) -> Result<ClassScores> {
        let n = check_matrix("classifier input features", features, self.dim)?;
        let x = match &self.standardizer {
            Some(s) => s.apply(features),
            None => features.to_vec(),
        };
        let logits = logits(&x, n, self, 0);
        ClassScores::new(n, self.num_classes, logits)
    }
}

/// `x·Wᵀ + b` for already-standardised `x` (`n × dim`).
pub fn logits(x: &[f32], n: usize, model: &LinearModel, threads: usize) -> Vec<f32> {
    let c = model.num_classes;
    let mut out =
        matmul(MatRef::row_major(x, n, model.dim), MatRef::row_major(&model.weight, c, model.dim).t(), threads);
    for row in out.chunks_exact_mut(c) {
        row.iter_mut().zip(&model.bias).for_each(|(o, b)| *o += b);
    }
    out
}

/// Mean softmax cross-entropy of `model` on (`x`, `labels`) and its gradient with respect to
/// the weight (`num_classes × dim`) and bias. `x` is already standardised.
pub struct LossGrad {
    pub loss: f64,
    pub grad_weight: Vec<f32>,
    pub grad_bias: Vec<f32>,
}

/// Computes [`LossGrad`] for a batch; `threads` is passed to the GEMM (1 = calling thread).
pub fn loss_and_grad(x: &[f32], labels: &[usize], model: &LinearModel, threads: usize) -> Result<LossGrad> {
    let n = labels.len();
    ensure!(n > 0, "softmax loss on an empty batch");
    ensure!(x.len() == n * model.dim, "softmax loss: feature/label count mismatch");
    let c = model.num_classes;
    let mut g = logits(x, n, model, threads);
    let mut loss = 0.0f64;
    let inv_n = 1.0 / n as f32;
    for (row, &y) in g.chunks_exact_mut(c).zip(labels) {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        // -log softmax_y = log(sum) - (z_y - max); row[y] holds exp(z_y - max).
        loss += sum.ln() - (row[y] as f64).ln();
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|v| *v *= inv * inv_n);
        row[y] -= inv_n;
    }
    let mut grad_weight = vec![0.0f32; c * model.dim];
    matmul_into(&mut grad_weight, MatRef::row_major(&g, n, c).t(), MatRef::row_major(x, n, model.dim), threads);
    let mut grad_bias = vec![0.0f32; c];
    for row in g.chunks_exact(c) {
        grad_bias.iter_mut().zip(row).for_each(|(gb, v)| *gb += v);
    }
    Ok(LossGrad { loss: loss / n as f64, grad_weight, grad_bias })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let x = [0.5, -1.0, 2.0, 0.3, -0.7, 1.1];
        let labels = [2, 0];
        let mut m = LinearModel::zeros(3, 3, None);
        m.weight = vec![0.1, -0.2, 0.3, 0.0, 0.5, -0.4, 0.2, 0.2, -0.1];
        m.bias = vec![0.05, -0.05, 0.1];
        let lg = loss_and_grad(&x, &labels, &m, 1).unwrap();
        let eps = 1e-3f32;
        for i in 0..9 {
            let mut p = m.clone();
            p.weight[i] += eps;
            let mut q = m.clone();
            q.weight[i] -= eps;
            let fd = (loss_and_grad(&x, &labels, &p, 1).unwrap().loss
                - loss_and_grad(&x, &labels, &q, 1).unwrap().loss)
                / (2.0 * eps as f64);
            assert!((fd - lg.grad_weight[i] as f64).abs() < 1e-3, "w{i}: {fd} vs {}", lg.grad_weight[i]);
        }
        let mut p = m.clone();
        p.bias[1] += eps;
        let mut q = m.clone();
        q.bias[1] -= eps;
        let fd = (loss_and_grad(&x, &labels, &p, 1).unwrap().loss - loss_and_grad(&x, &labels, &q, 1).unwrap().loss)
            / (2.0 * eps as f64);
        assert!((fd - lg.grad_bias[1] as f64).abs() < 1e-3);
        // Zero model: loss is ln(3).
        let z = LinearModel::zeros(3, 3, None);
        let l0 = loss_and_grad(&x, &labels, &z, 1).unwrap().loss;
        assert!((l0 - 3f64.ln()).abs() < 1e-6);
    }
}
