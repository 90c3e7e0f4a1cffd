//! Fixed, class-balanced label subsets for semi-supervised fine-tuning (paper §4.2, App. C.2:
//! 1% and 10% of the ImageNet training labels). Each class keeps `round(fraction × count)`
//! samples (at least one), drawn with a seeded shuffle, and the subset is saved as JSON (seed,
//! fraction, data set length, sorted indices) so that every run uses exactly the same samples.

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The positions of every class present in `labels` (all below `classes`), each list shuffled
/// with one RNG seeded by `seed`, classes in order. The seeded class-balanced draws (label subsets,
/// the fine-tuning hold-out) take their share from the front of each list.
pub(crate) fn shuffled_by_class(labels: &[usize], classes: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        per_class[l].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    per_class.retain(|m| !m.is_empty());
    for members in &mut per_class {
        members.shuffle(&mut rng);
    }
    per_class
}

/// A reproducible subset of a labelled training set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelSubset {
    pub seed: u64,
    pub fraction: f64,
    /// Length of the data set the indices refer to.
    pub dataset_len: usize,
    pub num_classes: usize,
    /// Sorted, distinct sample indices.
    pub indices: Vec<usize>,
}

impl LabelSubset {
    /// Draws `round(fraction × count_c)` (at least 1) samples of every class `c` present in
    /// `labels` (the labels of the whole training set, in index order).
    pub fn balanced(labels: &[usize], num_classes: usize, fraction: f64, seed: u64) -> Result<Self> {
        ensure!(fraction > 0.0 && fraction <= 1.0, "label subset: fraction must be in (0, 1], got {fraction}");
        ensure!(!labels.is_empty(), "label subset: the labelled training set is empty");
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l >= num_classes) {
            bail!("label subset: label {l} of sample {i} is not below the class count {num_classes}");
        }
        let mut indices = Vec::new();
        for members in shuffled_by_class(labels, num_classes, seed) {
            let keep = ((fraction * members.len() as f64).round() as usize).clamp(1, members.len());
            indices.extend_from_slice(&members[..keep]);
        }
        indices.sort_unstable();
        Ok(Self { seed, fraction, dataset_len: labels.len(), num_classes, indices })
    }

    /// Writes the subset as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing label subset {}", path.display()))
    }

    /// Reads a subset written by [`save`](Self::save) and checks it against the data set it
    /// will index: same length, indices in range, sorted and distinct.
    pub fn load(path: &Path, dataset_len: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading label subset {}", path.display()))?;
        let s: Self = serde_json::from_str(&text)
            .with_context(|| format!("label subset {} is not valid JSON of the expected form", path.display()))?;
        let p = path.display();
        ensure!(
            s.dataset_len == dataset_len,
            "label subset {p} was drawn from a data set of {} samples, this one has {dataset_len}",
            s.dataset_len
        );
        ensure!(!s.indices.is_empty(), "label subset {p} has no indices");
        for (pos, &i) in s.indices.iter().enumerate() {
            if i >= dataset_len {
                bail!("label subset {p}: index {i} (entry {pos}) is out of range for {dataset_len} samples");
            }
            if pos > 0 && s.indices[pos - 1] >= i {
                bail!("label subset {p}: indices are not sorted and distinct at entry {pos} ({i})");
            }
        }
        Ok(s)
    }

    /// Number of selected samples per class, given the labels of the full data set.
    pub fn class_counts(&self, labels: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &i in &self.indices {
            if let Some(&l) = labels.get(i) {
                if l < counts.len() {
                    counts[l] += 1;
                }
            }
        }
        counts
    }
}
