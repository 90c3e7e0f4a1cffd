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
use crate::features::{gather_rows, Standardizer};
use crate::image::Dataset;
use crate::linear_probe::LinearProbeConfig;
use crate::loader::{LoaderConfig, PairLoader};
use crate::params::{to_vec, ParamSet};
use crate::resnet::{self, ResNetConfig};
use crate::softmax::{loss_and_grad, LinearModel};

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
    let (mut vel_w, mut vel_b) = (vec![0f32; dim * num_classes], vec![0f32; num_classes]);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let total = (cfg.epochs * n.div_ceil(cfg.batch_size)) as f64;
    let mut step = 0usize;
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
        let mut epoch_loss = 0.0;
        for batch in order.chunks(cfg.batch_size) {
            let xb = gather_rows(&x, dim, batch);
            let yb: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
            let mut lg = loss_and_grad(&xb, &yb, &model, 1)?;
            epoch_loss += lg.loss * batch.len() as f64;
            let lr_t = (lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos())) as f32;
            if cfg.weight_decay != 0.0 {
                lg.grad_weight.iter_mut().zip(&model.weight).for_each(|(g, w)| *g += cfg.weight_decay * w);
            }
            nesterov(&mut model.weight, &mut vel_w, &lg.grad_weight, lr_t, cfg.momentum);
            nesterov(&mut model.bias, &mut vel_b, &lg.grad_bias, lr_t, cfg.momentum);
            step += 1;
        }
        let mean = epoch_loss / n as f64;
        ensure!(mean.is_finite(), "linear probe diverged (non-finite loss) with learning rate {lr}");
        progress(epoch + 1, mean);
    }
    Ok(model)
}

/// PyTorch's Nesterov SGD: v ← μv + g; p ← p − lr·(g + μv).
fn nesterov(param: &mut [f32], vel: &mut [f32], grad: &[f32], lr: f32, mu: f32) {
    for ((p, v), g) in param.iter_mut().zip(vel.iter_mut()).zip(grad) {
        *v = mu * *v + g;
        *p -= lr * (g + mu * *v);
    }
}
