//! Precomputed feature matrices (row-major `n × dim` `f32`) and their labels, as the frozen
//! encoder produces them for the evaluations of App. C/D (kNN, linear probe, logistic
//! regression): validation, L2 normalisation and standardisation.

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

/// Checks that `data` holds a whole number of `dim`-wide finite rows and returns the row count.
/// `what` names the matrix in error messages (e.g. "train features").
pub fn check_matrix(what: &str, data: &[f32], dim: usize) -> Result<usize> {
    ensure!(dim > 0, "{what}: feature dimension is 0");
    ensure!(
        data.len().is_multiple_of(dim),
        "{what}: buffer of {} values is not a whole number of rows of dimension {dim}",
        data.len()
    );
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        bail!("{what}: non-finite value {} at row {}, column {}", data[pos], pos / dim, pos % dim);
    }
    Ok(data.len() / dim)
}

/// Checks that there is one label per row and every label is `< num_classes`.
pub fn check_labels(what: &str, labels: &[usize], rows: usize, num_classes: usize) -> Result<()> {
    ensure!(num_classes > 0, "{what}: number of classes is 0");
    ensure!(labels.len() == rows, "{what}: {} labels for {rows} feature rows", labels.len());
    if let Some(pos) = labels.iter().position(|&l| l >= num_classes) {
        bail!("{what}: label {} at row {pos} is not below the class count {num_classes}", labels[pos]);
    }
    Ok(())
}

/// A copy of `data` with every row scaled to unit L2 norm (all-zero rows stay zero).
pub fn l2_normalized(data: &[f32], dim: usize) -> Vec<f32> {
    let mut out = data.to_vec();
    out.par_chunks_mut(dim).for_each(|row| {
        let norm = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
        if norm > 0.0 {
            let inv = (1.0 / norm) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    });
    out
}

/// Per-column mean and standard deviation (population) of a feature matrix.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits column statistics on `data` (`n × dim`, n ≥ 1). Columns with zero spread get std 1.
    pub fn fit(data: &[f32], dim: usize) -> Self {
        let n = (data.len() / dim).max(1) as f64;
        let mut sum = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for row in data.chunks_exact(dim) {
            for j in 0..dim {
                let v = row[j] as f64;
                sum[j] += v;
                sq[j] += v * v;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let var = (s / n - m * m).max(0.0);
                if var > 1e-12 {
                    var.sqrt() as f32
                } else {
                    1.0
                }
            })
            .collect();
        Self { mean: mean.iter().map(|m| *m as f32).collect(), std }
    }

    /// `(x - mean) / std` applied to every row, as a new buffer.
    pub fn apply(&self, data: &[f32]) -> Vec<f32> {
        let dim = self.mean.len();
        let mut out = data.to_vec();
        out.par_chunks_mut(dim).for_each(|row| {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *x = (*x - m) / s;
            }
        });
        out
    }
}

/// Copies rows `indices` of `data` into a new contiguous matrix.
pub fn gather_rows(data: &[f32], dim: usize, indices: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(indices.len() * dim);
    for &i in indices {
        out.extend_from_slice(&data[i * dim..(i + 1) * dim]);
    }
    out
}

/// Seeded random split of `0..n` into (fit, held-out) index lists, the held-out part holding
/// `round(fraction × n)` rows (at least 1 and at most n − 1). Used to choose hyper-parameters
/// on a slice of the training set (App. C.1/D.2). Both lists are sorted.
pub fn holdout_split(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    ensure!(fraction > 0.0 && fraction < 1.0, "held-out fraction must be in (0, 1), got {fraction}");
    ensure!(n >= 2, "cannot hold out part of a training set of {n} samples");
    let n_val = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut val = idx[..n_val].to_vec();
    let mut fit = idx[n_val..].to_vec();
    val.sort_unstable();
    fit.sort_unstable();
    Ok((fit, val))
}

/// Checks a labelled train/test pair of feature matrices (`what` names them in errors);
/// returns (train rows, test rows).
pub fn check_train_test(
    what: &str,
    train: &[f32],
    train_labels: &[usize],
    test: &[f32],
    test_labels: &[usize],
    dim: usize,
    num_classes: usize,
) -> Result<(usize, usize)> {
    let n = check_matrix(&format!("{what} train features"), train, dim)?;
    check_labels(&format!("{what} train labels"), train_labels, n, num_classes)?;
    let n_test = check_matrix(&format!("{what} test features"), test, dim)?;
    check_labels(&format!("{what} test labels"), test_labels, n_test, num_classes)?;
    Ok((n, n_test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let err = check_matrix("train features", &[1.0, 2.0, 3.0], 2).unwrap_err();
        assert!(err.to_string().contains("train features"));
        let err = check_matrix("x", &[1.0, f32::NAN], 2).unwrap_err();
        assert!(err.to_string().contains("row 0, column 1"), "{err}");
        assert_eq!(check_matrix("x", &[1.0; 6], 3).unwrap(), 2);
        assert!(check_labels("y", &[0, 3], 2, 3).is_err());
        assert!(check_labels("y", &[0], 2, 3).is_err());
        assert!(check_labels("y", &[0, 2], 2, 3).is_ok());
    }

    #[test]
    fn normalize_and_standardize() {
        let x = l2_normalized(&[3.0, 4.0, 0.0, 0.0], 2);
        assert_eq!(x, vec![0.6, 0.8, 0.0, 0.0]);
        let s = Standardizer::fit(&[1.0, 5.0, 3.0, 5.0], 2);
        assert_eq!(s.mean, vec![2.0, 5.0]);
        assert_eq!(s.std, vec![1.0, 1.0]);
        assert_eq!(s.apply(&[1.0, 5.0, 3.0, 6.0]), vec![-1.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn holdout_is_seeded_and_disjoint() {
        let (fit, val) = holdout_split(100, 0.1, 7).unwrap();
        assert_eq!((fit.len(), val.len()), (90, 10));
        assert!(val.iter().all(|v| !fit.contains(v)));
        assert_eq!(holdout_split(100, 0.1, 7).unwrap().1, val);
        assert_ne!(holdout_split(100, 0.1, 8).unwrap().1, val);
        assert!(holdout_split(1, 0.1, 7).is_err());
        assert!(holdout_split(10, 1.0, 7).is_err());
    }
}
