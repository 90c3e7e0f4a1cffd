//! A data set restricted to some of its samples (the first N, or a list of indices).

use std::sync::Arc;

use anyhow::{ensure, Result};

use crate::image::{Dataset, Sample};

/// The samples `indices` of `inner`, in that order.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// Checks every index against the data set length.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Self> {
        let n = inner.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            anyhow::bail!("subset index {bad} is out of range: the data set has {n} samples");
        }
        Ok(Self { inner, indices })
    }

    /// The first `limit` samples (all of them when `limit` is 0 or larger than the data set).
    pub fn first(inner: Arc<dyn Dataset>, limit: usize) -> Result<Arc<dyn Dataset>> {
        let n = inner.len();
        if limit == 0 || limit >= n {
            return Ok(inner);
        }
        ensure!(limit > 0, "limit must be positive");
        Ok(Arc::new(Self::new(inner, (0..limit).collect())?))
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<Sample> {
        ensure!(index < self.indices.len(), "index {index} out of range for a subset of {}", self.indices.len());
        self.inner.get(self.indices[index])
    }
    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }
    fn channels(&self) -> usize {
        self.inner.channels()
    }
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }
}
