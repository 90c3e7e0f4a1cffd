//! Feature extraction with a frozen encoder (evaluation transform, BatchNorm running statistics):
//! the representations y that kNN, the linear probe and `byol embed` work on (paper App. C).

use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};

use crate::augment::AugmentConfig;
use crate::image::Dataset;
use crate::loader::{EvalLoader, LoaderConfig};
use crate::params::{to_vec, ParamSet};
use crate::resnet::{self, ResNetConfig};

/// Features of every image of `dataset`, row-major `[n, out_dim]`, and the labels (if any).
pub struct Features {
    pub values: Vec<f32>,
    pub dim: usize,
    pub labels: Vec<Option<usize>>,
    pub indices: Vec<usize>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Labels, or an error when some image has none.
    pub fn required_labels(&self, what: &str) -> Result<Vec<usize>> {
        self.labels.iter().map(|l| l.with_context(|| format!("{what}: the data set has unlabelled images"))).collect()
    }
}

/// Runs the encoder (parameters `prefix*` of `ps`, evaluation mode) over a data set.
/// `progress` is called with (batches done, batches total).
#[allow(clippy::too_many_arguments)]
pub fn extract(
    cfg: &ResNetConfig,
    ps: &ParamSet,
    prefix: &str,
    dataset: Arc<dyn Dataset>,
    augment: &AugmentConfig,
    batch_size: usize,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Features> {
    let mut ps = ps.detached();
    let loader = EvalLoader::new(
        dataset,
        augment.clone(),
        LoaderConfig { batch_size, drop_last: false, shuffle: false, seed: 0, prefetch: 2, threads: 0 },
    )?;
    let total = loader.num_batches();
    let mut out = Features { values: Vec::new(), dim: cfg.out_dim(), labels: Vec::new(), indices: Vec::new() };
    let inner = device.clone().inner();
    for (i, batch) in loader.iter_from(0)?.enumerate() {
        let b = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(b.images, b.shape), &inner);
        let y = resnet::forward(cfg, &mut ps, prefix, x, false);
        out.values.extend(to_vec(&y));
        out.labels.extend(b.labels);
        out.indices.extend(b.indices);
        progress(i + 1, total);
    }
    Ok(out)
}
