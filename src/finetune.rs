//! `byol finetune`: semi-supervised evaluation (paper §4.2, App. C.2). The whole network —
//! encoder in training mode (batch statistics) plus a linear head — is fine-tuned on a fixed,
//! class-balanced subset of the training labels (1% or 10%), with SGD and Nesterov momentum 0.9,
//! a cosine learning rate and no weight decay, on random resized crops (scale 0.08–1) and
//! horizontal flips of the training images (view 1 of the pair loader with colour, blur and
//! solarization switched off). Test accuracy uses the evaluation transform and BatchNorm running
//! statistics.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::cli_eval::FinetuneArgs;
use crate::encoder_load::arch_string;
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
use crate::softmax::LinearModel;
use crate::subset::Subset;

/// What a fine-tuning run produced.
pub struct FinetuneOutcome {
    pub report: EvalReport,
    pub subset: LabelSubset,
    /// Mean training loss of every epoch.
    pub epoch_losses: Vec<f32>,
}

/// Labels of every sample of a labelled data set, in index order.
pub fn all_labels(ds: &dyn Dataset, what: &str) -> Result<Vec<usize>> {
    (0..ds.len()).map(|i| ds.get(i)?.label.with_context(|| format!("{what}: sample {i} has no label"))).collect()
}

/// Runs `byol finetune`.
pub fn run_finetune(a: &FinetuneArgs) -> Result<FinetuneOutcome> {
    ensure!(a.epochs > 0 && a.train_batch > 0, "--epochs and --train-batch must be positive");
    ensure!(a.lr > 0.0 && a.lr.is_finite(), "--lr must be positive, got {}", a.lr);
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
    let n = train_ds.len();
    eprintln!("fine-tuning on {n} labelled images ({} of {}), {} epochs", subset.fraction, train_all.len(), a.epochs);

    let aug = crate::eval_data::eval_augment(
        &a.data.dataset,
        a.data.augment.as_deref(),
        model.run_config.as_ref(),
        a.data.image_size,
    )?;
    let batch = a.train_batch.min(n);
    let loader = PairLoader::new(
        train_ds,
        crate::eval_data::crop_flip(&aug),
        LoaderConfig { batch_size: batch, drop_last: true, shuffle: true, seed: a.seed, prefetch: 2, threads: 0 },
    )?;

    let ad = device.clone().autodiff();
    let inner = device.clone().inner();
    let dim = model.arch.out_dim();
    let mut ps = ParamSet::new();
    ps.extend_prefixed("encoder.", enc_params.detached());
    let mut head = ParamSet::new();
    add_linear(&mut head, "fc", dim, c, true, &mut ChaCha8Rng::seed_from_u64(a.seed ^ 0x4845_4144), &inner);
    ps.extend_prefixed("head.", head);
    let mut ps = ps.to_device(&ad);

    let steps_per_epoch = loader.batches_per_epoch();
    let schedule = WarmupCosine { peak: a.lr, warmup_steps: 0, total_steps: steps_per_epoch * a.epochs };
    let mut opt = Sgd::new(0.9, 0.0, true);
    let bar = crate::progress::bar((steps_per_epoch * a.epochs) as u64, "fine-tune");
    let mut step = 0usize;
    let mut epoch_losses = Vec::new();
    for epoch in 0..a.epochs {
        let mut total = 0f64;
        for b in loader.epoch(epoch as u64, 0)? {
            let b = b?;
            let labels: Vec<usize> =
                b.labels.iter().map(|l| l.context("a training image has no label")).collect::<Result<_>>()?;
            let x = Tensor::<4>::from_data(TensorData::new(b.view1, b.shape), &inner).autodiff();
            let y = crate::resnet::forward(&model.arch, &mut ps, "encoder.", x, true);
            let loss = cross_entropy(linear(&ps, "head.fc", y), &labels);
            let grads = GradMap::collect(&ps, &loss.backward());
            let lv = loss.inner().into_scalar::<f32>();
            ensure!(lv.is_finite(), "fine-tuning diverged (loss {lv}) at epoch {} step {step}; lower --lr", epoch + 1);
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
            eprintln!("epoch {}/{}: loss {mean:.4}", epoch + 1, a.epochs);
        }
        epoch_losses.push(mean);
    }
    if let Some(p) = bar {
        p.finish_and_clear();
    }

    let encoder = ps.sub("encoder.");
    let bs = a.encoder.batch_size.max(1);
    let test = crate::progress::extract_with_bar(&model.arch, &encoder, test_ds, &aug, bs, &device, "test")?;
    let test_labels = test.required_labels("test split")?;
    let head = LinearModel {
        dim,
        num_classes: c,
        weight: ps.values("head.fc.weight"),
        bias: ps.values("head.fc.bias"),
        standardizer: None,
    };
    let scores = head.scores(&test.values)?;
    let params = json!({
        "checkpoint": a.encoder.checkpoint.display().to_string(),
        "arch": arch_string(&model.arch),
        "dataset": a.data.dataset,
        "label_fraction": subset.fraction,
        "labelled_images": n,
        "class_counts": subset.class_counts(&all_subset_labels(train_all.as_ref(), &subset)?),
        "subset_seed": subset.seed,
        "epochs": a.epochs,
        "lr": a.lr,
        "batch_size": batch,
        "optimizer": "SGD, Nesterov momentum 0.9, no weight decay, cosine lr",
        "augmentation": "random resized crop (scale 0.08-1) + horizontal flip",
        "epoch_losses": epoch_losses,
        "seed": a.seed,
    });
    let report = EvalReport::from_scores("finetune", &scores, &test_labels, &class_names, params)?;
    crate::evaluate::write_report(&report, &a.out, "finetune")?;
    save_finetuned(&ps, &model.arch, &a.out.join("finetuned.safetensors"))?;
    Ok(FinetuneOutcome { report, subset, epoch_losses })
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
