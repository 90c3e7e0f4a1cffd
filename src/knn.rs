//! Weighted cosine k-nearest-neighbour classifier on frozen features, as solo-learn and lightly
//! evaluate BYOL (see BYOL.md "Evaluation"; the paper itself reports linear evaluation, §4.1):
//! features are L2-normalised, the `k` most similar training samples vote for their class with
//! weight `exp(sim / T)` (k = 200, T = 0.1 by default), and classes are ranked by vote total.
//!
//! The test×train similarity matrix is never materialised: test rows are processed in blocks
//! (one blocked GEMM per block, blocks spread over rayon threads), keeping only the top-k.

use crate::dense::{matmul_into, MatRef};
use crate::features::{check_labels, check_matrix, l2_normalized};
use crate::scores::ClassScores;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// kNN parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnnConfig {
    /// Neighbours that vote (capped at the training-set size). Default 200.
    pub k: usize,
    /// Temperature T of the vote weight `exp(sim / T)`. Default 0.1.
    pub temperature: f32,
    /// Test rows per similarity block (memory per thread: `block_rows × n_train × 4` bytes).
    pub block_rows: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self { k: 200, temperature: 0.1, block_rows: 64 }
    }
}

/// Result of a labelled kNN evaluation.
#[derive(Clone, Debug)]
pub struct KnnEvaluation {
    /// Vote totals per class, one row per test sample.
    pub scores: ClassScores,
    /// Top-1 class of every test sample.
    pub predictions: Vec<usize>,
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy in [0, 1] (top-`num_classes` when there are fewer than 5 classes).
    pub top5: f64,
    /// The `k` actually used (after capping at the training-set size).
    pub k_used: usize,
}

/// Class vote totals for every test row. `train`/`test` are row-major `n × dim` matrices.
pub fn knn_scores(
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    dim: usize,
    num_classes: usize,
    cfg: &KnnConfig,
) -> Result<ClassScores> {
    let n_train = check_matrix("kNN train features", train, dim)?;
    let n_test = check_matrix("kNN test features", test, dim)?;
    check_labels("kNN train labels", train_labels, n_train, num_classes)?;
    ensure!(n_train > 0, "kNN: the training set is empty");
    ensure!(cfg.k > 0, "kNN: k must be at least 1");
    ensure!(
        cfg.temperature.is_finite() && cfg.temperature > 0.0,
        "kNN: temperature must be positive, got {}",
        cfg.temperature
    );
    let k = cfg.k.min(n_train);
    let block = cfg.block_rows.max(1);
    let inv_t = 1.0 / cfg.temperature as f64;
    let train_n = l2_normalized(train, dim);
    let test_n = l2_normalized(test, dim);
    let train_t = MatRef::row_major(&train_n, n_train, dim).t();
    let c = num_classes;

    let mut scores = vec![0.0f32; n_test * c];
    scores.par_chunks_mut(block * c).enumerate().for_each_init(
        || (Vec::<f32>::new(), Vec::<(f32, u32)>::new(), vec![0.0f64; c]),
        |(sims, idx, votes), (b, out)| {
            let r0 = b * block;
            let rows = out.len() / c;
            sims.resize(rows * n_train, 0.0);
            let lhs = MatRef::row_major(&test_n[r0 * dim..(r0 + rows) * dim], rows, dim);
            matmul_into(sims, lhs, train_t, 1);
            for r in 0..rows {
                let s = &sims[r * n_train..(r + 1) * n_train];
                top_k_into(s, k, idx);
                votes.iter_mut().for_each(|v| *v = 0.0);
                for &(sim, j) in idx.iter() {
                    votes[train_labels[j as usize]] += (sim as f64 * inv_t).exp();
                }
                for (o, v) in out[r * c..(r + 1) * c].iter_mut().zip(votes.iter()) {
                    *o = *v as f32;
                }
            }
        },
    );
    ClassScores::new(n_test, c, scores)
}

/// The `k` largest entries of `s` as `(value, index)` (unordered), ties to the lower index.
/// Keeps a candidate buffer and a running threshold (the k-th best so far), so almost every
/// entry costs one comparison.
fn top_k_into(s: &[f32], k: usize, cand: &mut Vec<(f32, u32)>) {
    let by_rank = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    cand.clear();
    let mut threshold = f32::NEG_INFINITY;
    for (j, &v) in s.iter().enumerate() {
        // Entries come in index order, so one equal to the threshold loses the tie.
        if v > threshold || cand.len() < k {
            cand.push((v, j as u32));
            if cand.len() >= 2 * k {
                cand.select_nth_unstable_by(k - 1, by_rank);
                cand.truncate(k);
                threshold = cand[k - 1].0;
            }
        }
    }
    if cand.len() > k {
        cand.select_nth_unstable_by(k - 1, by_rank);
        cand.truncate(k);
    }
}

/// kNN classification of labelled test features: scores, predictions, top-1 and top-5.
pub fn knn_evaluate(
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    test_labels: &[usize],
    dim: usize,
    num_classes: usize,
    cfg: &KnnConfig,
) -> Result<KnnEvaluation> {
    let scores = knn_scores(train, train_labels, test, dim, num_classes, cfg)?;
    check_labels("kNN test labels", test_labels, scores.n, num_classes)?;
    Ok(KnnEvaluation {
        predictions: scores.predictions(),
        top1: scores.top_k_accuracy(test_labels, 1),
        top5: scores.top_k_accuracy(test_labels, 5),
        k_used: cfg.k.min(train_labels.len()),
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: train points at angles 0°, 60°, 90°, 180° with labels 0, 1, 1, 0; test point
    /// at 0°. Cosine similarities 1, 0.5, 0, -1; with k = 3 the 180° point is dropped.
    #[test]
    fn weights_match_hand_computation() {
        let h = 3f32.sqrt() / 2.0;
        let train = [2.0, 0.0, 0.5, h, 0.0, 3.0, -1.0, 0.0];
        let labels = [0, 1, 1, 0];
        let cfg = KnnConfig { k: 3, temperature: 0.5, block_rows: 1 };
        let s = knn_scores(&train, &labels, &[5.0, 0.0], 2, 2, &cfg).unwrap();
        let class0 = (1.0f64 / 0.5).exp();
        let class1 = (0.5f64 / 0.5).exp() + (0.0f64 / 0.5).exp();
        assert!((s.data[0] as f64 - class0).abs() < 1e-4, "{:?}", s.data);
        assert!((s.data[1] as f64 - class1).abs() < 1e-4, "{:?}", s.data);
        // With k = 4 the opposite point (sim -1) adds exp(-2) to class 0.
        let cfg4 = KnnConfig { k: 4, ..cfg.clone() };
        let s4 = knn_scores(&train, &labels, &[5.0, 0.0], 2, 2, &cfg4).unwrap();
        assert!((s4.data[0] as f64 - class0 - (-2.0f64).exp()).abs() < 1e-4);
        // k larger than the training set is capped, not an error.
        let big = KnnConfig { k: 200, ..cfg };
        assert_eq!(knn_scores(&train, &labels, &[5.0, 0.0], 2, 2, &big).unwrap(), s4);
    }

    #[test]
    fn top_k_matches_full_sort_with_ties() {
        let s: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 101) as f32 / 100.0).collect();
        for k in [1, 5, 200, 999, 1000] {
            let mut got = Vec::new();
            top_k_into(&s, k, &mut got);
            got.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut all: Vec<(f32, u32)> = s.iter().enumerate().map(|(j, &v)| (v, j as u32)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            assert_eq!(got, all[..k].to_vec(), "k = {k}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let cfg = KnnConfig::default();
        assert!(knn_scores(&[1.0, 0.0], &[0], &[1.0], 2, 2, &cfg).is_err());
        assert!(knn_scores(&[1.0, 0.0], &[2], &[1.0, 0.0], 2, 2, &cfg).is_err());
        assert!(knn_scores(&[], &[], &[1.0, 0.0], 2, 2, &cfg).is_err());
        let zero_t = KnnConfig { temperature: 0.0, ..cfg };
        assert!(knn_scores(&[1.0, 0.0], &[0], &[1.0, 0.0], 2, 2, &zero_t).is_err());
    }
}
