//! Per-class score matrices produced by every classifier of the evaluation protocol (kNN
//! vote totals, linear-probe or logistic-regression logits) and the top-k accuracy read off
//! them (top-1/top-5, as reported throughout the paper's §4 tables).

use anyhow::{ensure, Result};
use rayon::prelude::*;

/// `n × num_classes` row-major scores; larger means more likely. Ties rank the lower class
/// index first, so predictions are deterministic.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassScores {
    pub n: usize,
    pub num_classes: usize,
    pub data: Vec<f32>,
}

impl ClassScores {
    /// Wraps a buffer, checking its size.
    pub fn new(n: usize, num_classes: usize, data: Vec<f32>) -> Result<Self> {
        ensure!(num_classes > 0, "class scores: number of classes is 0");
        ensure!(
            data.len() == n * num_classes,
            "class scores: {} values for {n} rows x {num_classes} classes",
            data.len()
        );
        Ok(Self { n, num_classes, data })
    }

    /// Scores of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.num_classes..(i + 1) * self.num_classes]
    }

    /// The `k` best classes of sample `i`, best first (`k` capped at the class count).
    pub fn top_k(&self, i: usize, k: usize) -> Vec<usize> {
        rank_top_k(self.row(i), k)
    }

    /// Top-1 prediction of every sample.
    pub fn predictions(&self) -> Vec<usize> {
        (0..self.n).into_par_iter().map(|i| rank_top_k(self.row(i), 1)[0]).collect()
    }

    /// Fraction of samples whose label is among the `k` best classes. 0 for no samples.
    pub fn top_k_accuracy(&self, labels: &[usize], k: usize) -> f64 {
        assert_eq!(labels.len(), self.n, "one label per scored sample");
        if self.n == 0 {
            return 0.0;
        }
        let hits: usize =
            (0..self.n).into_par_iter().filter(|&i| rank_top_k(self.row(i), k).contains(&labels[i])).count();
        hits as f64 / self.n as f64
    }
}

/// Indices of the `k` largest entries of `scores`, largest first, ties to the lower index.
pub fn rank_top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(scores.len());
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (c, &s) in scores.iter().enumerate() {
        // Position where c would go: after every entry that is >= s (earlier index wins ties).
        let pos = best.iter().position(|&b| scores[b] < s).unwrap_or(best.len());
        if pos < k {
            best.insert(pos, c);
            best.truncate(k);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_and_accuracy() {
        assert_eq!(rank_top_k(&[0.1, 0.5, 0.5, 0.9], 3), vec![3, 1, 2]);
        assert_eq!(rank_top_k(&[1.0, 2.0], 5), vec![1, 0]);
        let s = ClassScores::new(3, 3, vec![1., 0., 0., 0., 1., 2., 0., 3., 2.]).unwrap();
        assert_eq!(s.predictions(), vec![0, 2, 1]);
        let labels = [0, 1, 2];
        assert!((s.top_k_accuracy(&labels, 1) - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.top_k_accuracy(&labels, 2) - 1.0).abs() < 1e-12);
        assert!(ClassScores::new(2, 3, vec![0.0; 5]).is_err());
    }
}
