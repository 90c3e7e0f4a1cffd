//! kNN monitor during pretraining (solo-learn, lightly): the frozen online encoder embeds a
//! labelled memory bank and test images; cosine kNN with k = 200 and weights exp(sim/0.1).

use std::sync::Arc;

use anyhow::Result;
use burn::tensor::Device;

use crate::augment::AugmentConfig;
use crate::byol::Byol;
use crate::config::PretrainConfig;
use crate::extract::extract;
use crate::image::Dataset;
use crate::knn::{knn_evaluate, KnnConfig};

/// Data and settings of the kNN monitor.
pub struct KnnMonitor {
    train: Arc<dyn Dataset>,
    test: Arc<dyn Dataset>,
    augment: AugmentConfig,
    knn: KnnConfig,
    num_classes: usize,
}

impl KnnMonitor {
    /// `None` when monitoring is off or the data set has no labels or no test split.
    pub fn new(cfg: &PretrainConfig, augment: &AugmentConfig, labelled: bool) -> Result<Option<Self>> {
        if cfg.monitor.knn_every == 0 || !labelled {
            return Ok(None);
        }
        let train = crate::pretrain::open_dataset(cfg, "train", cfg.monitor.knn_train_limit)?;
        let test = match crate::pretrain::open_dataset(cfg, "test", cfg.monitor.knn_test_limit) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("warning: kNN monitor disabled: no test split ({e:#})");
                return Ok(None);
            }
        };
        let Some(num_classes) = train.num_classes() else { return Ok(None) };
        Ok(Some(Self {
            train,
            test,
            augment: augment.clone(),
            knn: KnnConfig { k: cfg.monitor.knn_k, temperature: cfg.monitor.knn_temperature, ..Default::default() },
            num_classes,
        }))
    }

    /// (top-1, top-5) of the online encoder.
    pub fn evaluate(&self, model: &Byol, device: &Device) -> Result<(f64, f64)> {
        let cfg = &model.cfg.encoder;
        let tr = extract(cfg, &model.online, "encoder.", self.train.clone(), &self.augment, 256, device, |_, _| {})?;
        let te = extract(cfg, &model.online, "encoder.", self.test.clone(), &self.augment, 256, device, |_, _| {})?;
        let r = knn_evaluate(
            &tr.values,
            &tr.required_labels("kNN memory bank")?,
            &te.values,
            &te.required_labels("kNN test set")?,
            tr.dim,
            self.num_classes,
            &self.knn,
        )?;
        Ok((r.top1, r.top5))
    }
}
