//! `byol eval knn` and `byol eval linear`: frozen-encoder evaluation (paper App. C.1, D.2;
//! kNN as solo-learn/lightly). The encoder runs in evaluation mode (BatchNorm running
//! statistics); features of the train and test splits are computed once, then the kNN
//! classifier, the SGD linear probe or the L-BFGS logistic regression works on them. Each writes
//! a JSON report and a confusion-matrix PNG.
//!
//! With `--crop-flip` the SGD probe trains, as in the paper, on features of a fresh random crop +
//! flip of every training image each epoch (`linear_augmented.rs`); the learning rate is still
//! picked by the sweep on center-crop features.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::Device;
use serde_json::json;

use crate::augment::AugmentConfig;
use crate::image::Dataset;
use crate::params::ParamSet;

use crate::cli_eval::{DataArgs, EncoderArgs, KnnArgs, LinearArgs, LinearMethod};
use crate::encoder_load::{arch_string, LoadedModel};
use crate::extract::Features;
use crate::knn::{knn_evaluate, KnnConfig};
use crate::linear_probe::{linear_probe, LinearProbeConfig};
use crate::logreg::{logistic_regression, LogRegConfig};
use crate::report::EvalReport;

/// Features and labels of both splits, plus what the report needs to name.
pub struct SplitFeatures {
    pub model: LoadedModel,
    /// Encoder parameters (evaluation mode), device and transform used.
    pub params: ParamSet,
    pub device: Device,
    pub augment: AugmentConfig,
    pub train_ds: Arc<dyn Dataset>,
    pub train: Features,
    pub test: Features,
    pub train_labels: Vec<usize>,
    pub test_labels: Vec<usize>,
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

/// Loads the encoder and embeds the train and test splits with the evaluation transform.
pub fn split_features(enc: &EncoderArgs, data: &DataArgs) -> Result<SplitFeatures> {
    let (model, params, device) = enc.load()?;
    let d = data.data.as_deref();
    let train_ds = crate::eval_data::open_split(&data.dataset, d, "train", data.train_limit)?;
    let test_ds = crate::eval_data::open_split(&data.dataset, d, "test", data.test_limit)?;
    let num_classes = train_ds
        .num_classes()
        .with_context(|| format!("data set {} has no labels: evaluation needs labels", data.dataset))?;
    let class_names = train_ds.class_names();
    let aug = crate::eval_data::eval_augment(
        &data.dataset,
        data.augment.as_deref(),
        model.run_config.as_ref(),
        data.image_size,
    )?;
    let bs = enc.batch_size.max(1);
    let train = crate::progress::extract_with_bar(&model.arch, &params, train_ds.clone(), &aug, bs, &device, "train")
        .context("embedding the train split")?;
    let test = crate::progress::extract_with_bar(&model.arch, &params, test_ds, &aug, bs, &device, "test")
        .context("embedding the test split")?;
    let train_labels = train.required_labels("train split")?;
    let test_labels = test.required_labels("test split")?;
    Ok(SplitFeatures {
        model,
        params,
        device,
        augment: aug,
        train_ds,
        train,
        test,
        train_labels,
        test_labels,
        num_classes,
        class_names,
    })
}

/// Parameters every report records.
fn base_params(f: &SplitFeatures, enc: &EncoderArgs, data: &DataArgs) -> serde_json::Value {
    json!({
        "checkpoint": enc.checkpoint.display().to_string(),
        "source": f.model.source.display().to_string(),
        "arch": arch_string(&f.model.arch),
        "encoder": if enc.target { "target" } else { "online" },
        "dataset": data.dataset,
        "num_train": f.train.len(),
        "num_test": f.test.len(),
        "feature_dim": f.train.dim,
    })
}

fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Writes `out/<name>.json` and `out/<name>-confusion.png`.
pub fn write_report(report: &EvalReport, out: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    let json_path = out.join(format!("{name}.json"));
    let png_path = out.join(format!("{name}-confusion.png"));
    report.write_json(&json_path)?;
    report.write_confusion_png(&png_path)?;
    Ok((json_path, png_path))
}

/// `byol eval knn`: k-NN with cosine similarity and weights exp(sim/T).
pub fn run_knn(a: &KnnArgs) -> Result<EvalReport> {
    let f = split_features(&a.encoder, &a.data)?;
    let cfg = KnnConfig { k: a.k, temperature: a.temperature, ..Default::default() };
    let r = knn_evaluate(
        &f.train.values,
        &f.train_labels,
        &f.test.values,
        &f.test_labels,
        f.train.dim,
        f.num_classes,
        &cfg,
    )?;
    let params = merge(
        base_params(&f, &a.encoder, &a.data),
        json!({"k": a.k, "k_used": r.k_used, "temperature": a.temperature}),
    );
    let report = EvalReport::from_scores("knn", &r.scores, &f.test_labels, &f.class_names, params)?;
    write_report(&report, &a.out, "knn")?;
    Ok(report)
}

/// `byol eval linear`: SGD linear probe or logistic regression on frozen features.
pub fn run_linear(a: &LinearArgs) -> Result<EvalReport> {
    let f = split_features(&a.encoder, &a.data)?;
    let base = base_params(&f, &a.encoder, &a.data);
    let (dim, c) = (f.train.dim, f.num_classes);
    let (name, scores, params) = match a.method {
        LinearMethod::Sgd => {
            let cfg = LinearProbeConfig {
                epochs: a.epochs,
                batch_size: a.probe_batch,
                lr_candidates: a.lr.clone(),
                holdout_fraction: a.holdout,
                standardize: a.standardize,
                seed: a.seed,
                ..Default::default()
            };
            if a.crop_flip {
                let (scores, p) = crop_flip_probe(&f, &cfg)?;
                ("linear", scores, merge(base, p))
            } else {
                let r = linear_probe(&f.train.values, &f.train_labels, &f.test.values, &f.test_labels, dim, c, &cfg)?;
                let p = json!({"method": "sgd-nesterov", "config": cfg, "best_lr": r.best_lr, "sweep": r.sweep,
                    "augmentation": "none (center-crop features computed once)"});
                ("linear", r.scores, merge(base, p))
            }
        }
        LinearMethod::Logreg => {
            let mut cfg = LogRegConfig {
                holdout_fraction: a.holdout,
                standardize: a.standardize,
                seed: a.seed,
                ..Default::default()
            };
            if !a.lambda.is_empty() {
                cfg.lambdas = a.lambda.clone();
            }
            let r =
                logistic_regression(&f.train.values, &f.train_labels, &f.test.values, &f.test_labels, dim, c, &cfg)?;
            let p = json!({"method": "logreg-lbfgs", "config": cfg, "best_lambda": r.best_lambda, "sweep": r.sweep});
            ("logreg", r.scores, merge(base, p))
        }
    };
    let report = EvalReport::from_scores(name, &scores, &f.test_labels, &f.class_names, params)?;
    write_report(&report, &a.out, name)?;
    Ok(report)
}

/// The SGD probe on per-epoch crop + flip features; lr from the center-crop sweep.
fn crop_flip_probe(
    f: &SplitFeatures,
    cfg: &LinearProbeConfig,
) -> Result<(crate::scores::ClassScores, serde_json::Value)> {
    let (dim, c) = (f.train.dim, f.num_classes);
    let (best_lr, sweep) = if cfg.lr_candidates.len() > 1 {
        let r = linear_probe(&f.train.values, &f.train_labels, &f.test.values, &f.test_labels, dim, c, cfg)?;
        (r.best_lr, r.sweep)
    } else {
        (*cfg.lr_candidates.first().context("no learning rate given")?, Vec::new())
    };
    let aug = crate::eval_data::crop_flip(&f.augment);
    let bar = crate::progress::bar(cfg.epochs as u64, "crop+flip epochs");
    let model = crate::linear_augmented::train_linear_augmented(
        &f.model.arch,
        &f.params,
        f.train_ds.clone(),
        &aug,
        256,
        c,
        best_lr,
        cfg,
        &f.device,
        |e, loss| match &bar {
            Some(b) => {
                b.set_position(e as u64);
                b.set_message(format!("loss {loss:.4}"));
            }
            None => eprintln!("epoch {e}/{}: loss {loss:.4}", cfg.epochs),
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let p = json!({"method": "sgd-nesterov", "config": cfg, "best_lr": best_lr, "sweep": sweep,
        "augmentation": "random resized crop (scale 0.08-1) + horizontal flip, re-extracted every epoch; lr swept on center-crop features"});
    Ok((model.scores(&f.test.values)?, p))
}
