//! `byol finetune`: semi-supervised evaluation (paper §4.2, App. C.2). The whole network —
//! encoder in training mode (batch statistics) plus a linear head — is fine-tuned on a fixed,
//! class-balanced subset of the training labels (1% or 10%), with SGD and Nesterov momentum 0.9,
//! a cosine learning rate and no weight decay. Test accuracy uses the evaluation transform and
//! BatchNorm running statistics.
//!
//! Learning rate (App. C.2 sweep, App. C.1 held-out protocol): with several `--lrs`, each rate
//! fine-tunes the pretrained weights (and a fresh head with the same initialisation) on the
//! labelled subset minus a seeded, class-balanced `--holdout` slice and is scored by top-1 on that
//! slice ([`crate::finetune_sweep`]); the best rate is then used on the whole labelled subset. A
//! single `--lrs` value skips the sweep.
//!
//! Training augmentation: view 1 of the pair loader with colour, blur and solarization switched
//! off ([`crate::eval_data::crop_flip`]), i.e. a random resized crop (scale 0.08–1) at the
//! evaluation crop size and a horizontal flip with probability 0.5. The draw of every image is
//! seeded by (`--seed`, epoch, sample index), so each epoch sees new crops and flips and a rerun
//! with the same seed sees the same ones.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::augment::AugmentConfig;
use crate::cli_eval::FinetuneArgs;
use crate::encoder_load::{arch_string, LoadedModel};
use crate::finetune_sweep::{balanced_holdout, best_trial, check_lrs, Diverged, FinetuneTrial};
use crate::grads::GradMap;
use crate::image::Dataset;
use crate::label_subset::LabelSubset;
use crate::layers::{add_linear, linear};
use crate::loader::{LoaderConfig, PairLoader};
use crate::optim::{Optimizer, Sgd};
use crate::params::{write_safetensors_with_metadata, HostTensors, ParamSet};
use crate::probe::cross_entropy;
use crate::report::EvalReport;
use crate::schedule::WarmupCosine;
use crate::scores::ClassScores;
use crate::softmax::LinearModel;
use crate::subset::Subset;

/// What a fine-tuning run produced.
pub struct FinetuneOutcome {
    pub report: EvalReport,
    pub subset: LabelSubset,
    /// Mean training loss of every epoch of the final run (chosen lr, whole labelled subset).
    pub epoch_losses: Vec<f32>,
    /// The learning rate of the final run.
    pub best_lr: f64,
    /// One entry per `--lrs` value (empty when a single value skipped the sweep).
    pub sweep: Vec<FinetuneTrial>,
}

/// Labels of every sample of a labelled data set, in index order.
pub fn all_labels(ds: &dyn Dataset, what: &str) -> Result<Vec<usize>> {
    (0..ds.len()).map(|i| ds.get(i)?.label.with_context(|| format!("{what}: sample {i} has no label"))).collect()
}

/// What every fine-tuning run of one invocation shares.
struct Job<'a> {
    model: &'a LoadedModel,
    /// The pretrained encoder; every run starts from these weights.
    encoder: &'a ParamSet,
    /// Training augmentation (random resized crop + flip).
    train_aug: AugmentConfig,
    /// Evaluation transform (held-out slice and test set).
    eval_aug: AugmentConfig,
    num_classes: usize,
    epochs: usize,
    train_batch: usize,
    eval_batch: usize,
    seed: u64,
    device: Device,
}

/// A fine-tuned network: `encoder.*` and `head.fc.*` on the autodiff device.
struct Trained {
    ps: ParamSet,
    batch: usize,
    epoch_losses: Vec<f32>,
}

/// Seed tag of the head initialisation (the same for every trial and the final run).
const HEAD_TAG: u64 = 0x4845_4144;
/// Seed tag of the held-out split.
const HOLDOUT_TAG: u64 = 0x484F_4C44;

/// Runs `byol finetune`.
pub fn run_finetune(a: &FinetuneArgs) -> Result<FinetuneOutcome> {
    ensure!(a.epochs > 0 && a.train_batch > 0, "--epochs and --train-batch must be positive");
    check_lrs(&a.lrs)?;
    ensure!(a.holdout > 0.0 && a.holdout < 1.0, "--holdout must be in (0, 1), got {}", a.holdout);
    let (model, enc_params, device) = a.encoder.load()?;
    let d = a.data.data.as_deref();
    let train_all = crate::eval_data::open_split(&a.data.dataset, d, "train", a.data.train_limit)?;
    let test_ds = crate::eval_data::open_split(&a.data.dataset, d, "test", a.data.test_limit)?;
    let c = train_all.num_classes().with_context(|| format!("data set {} has no labels", a.data.dataset))?;
    let class_names = train_all.class_names();

    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create output folder {}", a.out.display()))?;
    let subset = match &a.subset {
        Some(path) => LabelSubset::load(path, train_all.len())?,
        None => {
            let labels = all_labels(train_all.as_ref(), "train split")?;
            LabelSubset::balanced(&labels, c, a.label_fraction, a.seed)?
        }
    };
    subset.save(&a.out.join("label-subset.json"))?;
    let train_ds: Arc<dyn Dataset> = Arc::new(Subset::new(train_all.clone(), subset.indices.clone())?);
    let subset_labels = all_labels(train_ds.as_ref(), "label subset")?;
    let n = train_ds.len();
    eprintln!("fine-tuning on {n} labelled images ({} of {}), {} epochs", subset.fraction, train_all.len(), a.epochs);

    let eval_aug = crate::eval_data::eval_augment(
        &a.data.dataset,
        a.data.augment.as_deref(),
        model.run_config.as_ref(),
        a.data.image_size,
    )?;
    let job = Job {
        model: &model,
        encoder: &enc_params,
        train_aug: crate::eval_data::crop_flip(&eval_aug),
        eval_aug,
        num_classes: c,
        epochs: a.epochs,
        train_batch: a.train_batch,
        eval_batch: a.encoder.batch_size.max(1),
        seed: a.seed,
        device,
    };

    let (best_lr, sweep, holdout_images) = if a.lrs.len() == 1 {
        (a.lrs[0], Vec::new(), 0)
    } else {
        let (fit, val) = balanced_holdout(&subset_labels, a.holdout, a.seed ^ HOLDOUT_TAG)?;
        let val_labels: Vec<usize> = val.iter().map(|&i| subset_labels[i]).collect();
        let fit_ds: Arc<dyn Dataset> = Arc::new(Subset::new(train_ds.clone(), fit)?);
        let val_ds: Arc<dyn Dataset> = Arc::new(Subset::new(train_ds.clone(), val)?);
        eprintln!("lr sweep over {:?}: {} images to fit, {} held out", a.lrs, fit_ds.len(), val_ds.len());
        let mut trials = Vec::new();
        for &lr in &a.lrs {
            let t = trial(&job, &fit_ds, &val_ds, &val_labels, lr)?;
            match (&t.holdout_top1, &t.failed) {
                (Some(acc), _) => eprintln!("lr {lr}: held-out top-1 {:.2}%", acc * 100.0),
                (None, why) => eprintln!("lr {lr}: failed ({})", why.as_deref().unwrap_or("?")),
            }
            trials.push(t);
        }
        let best = a.lrs[best_trial(&trials)?];
        eprintln!("chosen lr {best}; fine-tuning on all {n} labelled images");
        (best, trials, val_labels.len())
    };

    let run = train(&job, train_ds, best_lr).with_context(|| format!("fine-tuning with the chosen lr {best_lr}"))?;
    let (scores, test_labels) = score(&job, &run.ps, test_ds, "test")?;
    ensure!(
        scores.data.iter().all(|v| v.is_finite()),
        "fine-tuning with the chosen lr {best_lr} produced non-finite test scores; lower --lrs"
    );
    let params = json!({
        "checkpoint": a.encoder.checkpoint.display().to_string(),
        "arch": arch_string(&model.arch),
        "dataset": a.data.dataset,
        "label_fraction": subset.fraction,
        "labelled_images": n,
        "class_counts": subset.class_counts(&all_subset_labels(train_all.as_ref(), &subset)?),
        "subset_seed": subset.seed,
        "epochs": a.epochs,
        "lr": best_lr,
        "best_lr": best_lr,
        "lrs": a.lrs,
        "holdout": a.holdout,
        "holdout_images": holdout_images,
        "sweep": sweep,
        "batch_size": run.batch,
        "optimizer": "SGD, Nesterov momentum 0.9, no weight decay, cosine lr",
        "augmentation": "random resized crop (scale 0.08-1) + horizontal flip, redrawn every epoch",
        "epoch_losses": run.epoch_losses,
        "seed": a.seed,
    });
    let report = EvalReport::from_scores("finetune", &scores, &test_labels, &class_names, params)?;
    crate::evaluate::write_report(&report, &a.out, "finetune")?;
    save_finetuned(&run.ps, &model.arch, &a.out.join("finetuned.safetensors"))?;
    Ok(FinetuneOutcome { report, subset, epoch_losses: run.epoch_losses, best_lr, sweep })
}

/// One sweep trial: fine-tune on `fit` with `lr`, score top-1 on `val`. Divergence (a
/// non-finite loss or non-finite held-out scores) is a failed trial; other errors propagate.
fn trial(
    job: &Job,
    fit: &Arc<dyn Dataset>,
    val: &Arc<dyn Dataset>,
    val_labels: &[usize],
    lr: f64,
) -> Result<FinetuneTrial> {
    let failed = |why: String| FinetuneTrial { lr, holdout_top1: None, final_train_loss: None, failed: Some(why) };
    let run = match train(job, fit.clone(), lr) {
        Ok(run) => run,
        Err(e) if e.downcast_ref::<Diverged>().is_some() => return Ok(failed(e.to_string())),
        Err(e) => return Err(e.context(format!("fine-tuning trial with lr {lr}"))),
    };
    let (scores, _) = score(job, &run.ps, val.clone(), "held-out")?;
    if scores.data.iter().any(|v| !v.is_finite()) {
        return Ok(failed(format!("fine-tuning with lr {lr} produced non-finite held-out scores")));
    }
    Ok(FinetuneTrial {
        lr,
        holdout_top1: Some(scores.top_k_accuracy(val_labels, 1)),
        final_train_loss: run.epoch_losses.last().map(|&l| l as f64),
        failed: None,
    })
}

/// Fine-tunes the pretrained encoder plus a fresh head on `data` with peak rate `lr`. A
/// non-finite loss stops training with a [`Diverged`] error.
fn train(job: &Job, data: Arc<dyn Dataset>, lr: f64) -> Result<Trained> {
    let n = data.len();
    let batch = job.train_batch.min(n);
    let loader = PairLoader::new(
        data,
        job.train_aug.clone(),
        LoaderConfig { batch_size: batch, drop_last: true, shuffle: true, seed: job.seed, prefetch: 2, threads: 0 },
    )?;
    let ad = job.device.clone().autodiff();
    let inner = job.device.clone().inner();
    let (arch, c) = (&job.model.arch, job.num_classes);
    let mut ps = ParamSet::new();
    ps.extend_prefixed("encoder.", job.encoder.detached());
    let mut head = ParamSet::new();
    add_linear(&mut head, "fc", arch.out_dim(), c, true, &mut ChaCha8Rng::seed_from_u64(job.seed ^ HEAD_TAG), &inner);
    ps.extend_prefixed("head.", head);
    let mut ps = ps.to_device(&ad);

    let steps_per_epoch = loader.batches_per_epoch();
    let schedule = WarmupCosine { peak: lr, warmup_steps: 0, total_steps: steps_per_epoch * job.epochs };
    let mut opt = Sgd::new(0.9, 0.0, true);
    let bar = crate::progress::bar((steps_per_epoch * job.epochs) as u64, &format!("fine-tune lr {lr}"));
    let mut step = 0usize;
    let mut epoch_losses = Vec::new();
    for epoch in 0..job.epochs {
        let mut total = 0f64;
        for b in loader.epoch(epoch as u64, 0)? {
            let b = b?;
            let labels: Vec<usize> =
                b.labels.iter().map(|l| l.context("a training image has no label")).collect::<Result<_>>()?;
            let x = Tensor::<4>::from_data(TensorData::new(b.view1, b.shape), &inner).autodiff();
            let y = crate::resnet::forward(arch, &mut ps, "encoder.", x, true);
            let loss = cross_entropy(linear(&ps, "head.fc", y), &labels);
            let grads = GradMap::collect(&ps, &loss.backward());
            let lv = loss.inner().into_scalar::<f32>();
            if !lv.is_finite() {
                if let Some(p) = &bar {
                    p.finish_and_clear();
                }
                return Err(Diverged { lr, epoch: epoch + 1, step, loss: lv }.into());
            }
            opt.step(&mut ps, &grads, schedule.at(step));
            total += lv as f64;
            step += 1;
            if let Some(p) = &bar {
                p.set_position(step as u64);
                p.set_message(format!("epoch {} loss {lv:.4}", epoch + 1));
            }
        }
        let mean = (total / steps_per_epoch.max(1) as f64) as f32;
        if bar.is_none() {
            eprintln!("lr {lr} epoch {}/{}: loss {mean:.4}", epoch + 1, job.epochs);
        }
        epoch_losses.push(mean);
    }
    if let Some(p) = bar {
        p.finish_and_clear();
    }
    Ok(Trained { ps, batch, epoch_losses })
}

/// Class scores of the fine-tuned network on `data` (evaluation transform, BatchNorm running
/// statistics) and the data's labels.
fn score(job: &Job, ps: &ParamSet, data: Arc<dyn Dataset>, what: &str) -> Result<(ClassScores, Vec<usize>)> {
    let encoder = ps.sub("encoder.");
    let arch = &job.model.arch;
    let feats =
        crate::progress::extract_with_bar(arch, &encoder, data, &job.eval_aug, job.eval_batch, &job.device, what)?;
    let labels = feats.required_labels(&format!("{what} split"))?;
    let head = LinearModel {
        dim: arch.out_dim(),
        num_classes: job.num_classes,
        weight: ps.values("head.fc.weight"),
        bias: ps.values("head.fc.bias"),
        standardizer: None,
    };
    Ok((head.scores(&feats.values)?, labels))
}
/// Labels indexed like the full training set, known only at the subset's positions (others 0);
/// enough for [`LabelSubset::class_counts`].
fn all_subset_labels(ds: &dyn Dataset, subset: &LabelSubset) -> Result<Vec<usize>> {
    let mut labels = vec![0; ds.len()];
    for &i in &subset.indices {
        labels[i] = ds.get(i)?.label.unwrap_or(0);
    }
    Ok(labels)
}

/// Saves the fine-tuned network with torchvision names: encoder tensors and the head as `fc.*`,
/// i.e. a torchvision ResNet state dict with its classifier.
fn save_finetuned(ps: &ParamSet, arch: &crate::resnet::ResNetConfig, path: &std::path::Path) -> Result<()> {
    let mut t: HostTensors = ps.sub("encoder.").to_host();
    t.extend(ps.sub("head.").to_host());
    let meta = HashMap::from([
        ("format".to_string(), "byol-finetuned-1".to_string()),
        ("arch".to_string(), arch_string(arch)),
    ]);
    write_safetensors_with_metadata(path, &t, Some(meta))
}
