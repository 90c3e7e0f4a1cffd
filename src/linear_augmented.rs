//! Linear evaluation with the paper's training augmentation (App. C.1): every epoch the frozen
//! encoder (evaluation-mode BatchNorm) embeds a fresh random resized crop + horizontal flip of
//! each training image, and the linear classifier takes one epoch of mini-batch SGD (Nesterov
//! momentum, cosine learning rate over all epochs, optional weight decay) on those features.
//! The augmentation of sample i in epoch e is a function of (seed, e, i), as in pretraining.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::AugmentConfig;
use crate::features::Standardizer;
use crate::image::Dataset;
use crate::linear_probe::{sgd_epoch, LinearProbeConfig, SgdState};
use crate::loader::{LoaderConfig, PairLoader};
use crate::params::{to_vec, ParamSet};
use crate::resnet::{self, ResNetConfig};
use crate::softmax::LinearModel;

/// Features of one augmented pass over `dataset` (view 1 of `augment`, epoch `epoch`), in
/// data set order, with the labels.
#[allow(clippy::too_many_arguments)]
pub fn augmented_features(
    arch: &ResNetConfig,
    encoder: &ParamSet,
    dataset: Arc<dyn Dataset>,
    augment: &AugmentConfig,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    device: &Device,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut ps = encoder.detached();
    let loader = PairLoader::new(
        dataset,
        augment.clone(),
        LoaderConfig { batch_size, drop_last: false, shuffle: false, seed, prefetch: 2, threads: 0 },
    )?;
    let inner = device.clone().inner();
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for b in loader.epoch(epoch, 0)? {
        let b = b?;
        let x = Tensor::<4>::from_data(TensorData::new(b.view1, b.shape), &inner);
        values.extend(to_vec(&resnet::forward(arch, &mut ps, "", x, false)));
        for l in b.labels {
            labels.push(l.context("linear evaluation: a training image has no label")?);
        }
    }
    Ok((values, labels))
}

/// Trains the linear classifier on per-epoch augmented features with learning rate `lr`.
/// `progress` is called after every epoch with (epoch, mean training loss).
#[allow(clippy::too_many_arguments)]
pub fn train_linear_augmented(
    arch: &ResNetConfig,
    encoder: &ParamSet,
    train: Arc<dyn Dataset>,
    augment: &AugmentConfig,
    extract_batch: usize,
    num_classes: usize,
    lr: f32,
    cfg: &LinearProbeConfig,
    device: &Device,
    mut progress: impl FnMut(usize, f64),
) -> Result<LinearModel> {
    ensure!(cfg.epochs > 0 && cfg.batch_size > 0, "linear probe: epochs and batch size must be > 0");
    ensure!(lr.is_finite() && lr > 0.0, "linear probe: learning rate must be positive, got {lr}");
    let n = train.len();
    ensure!(n > 0, "linear probe: the training set is empty");
    let dim = arch.out_dim();
    let mut model = LinearModel::zeros(dim, num_classes, None);
    let mut sgd = SgdState::new(&model, n, cfg);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 0..cfg.epochs {
        let (mut x, labels) =
            augmented_features(arch, encoder, train.clone(), augment, extract_batch, cfg.seed, epoch as u64, device)?;
        if cfg.standardize {
            if model.standardizer.is_none() {
                model.standardizer = Some(Standardizer::fit(&x, dim));
            }
            if let Some(s) = &model.standardizer {
                x = s.apply(&x);
            }
        }
        order.shuffle(&mut rng);
        let mean = sgd_epoch(&x, &labels, &order, &mut model, &mut sgd, lr, cfg)?;
        progress(epoch + 1, mean);
    }
    Ok(model)
}
