//! `byol pretrain`: the BYOL training loop (paper §3, Algorithm 1) with LARS, the warmup-cosine
//! learning rate, the cosine τ schedule, gradient accumulation (target updated once per
//! optimizer step, as the paper's batch-size ablation), monitoring, checkpoints and exact resume.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::{Tensor, TensorData};

use crate::byol::Byol;
use crate::checkpoint::{self, Checkpoint};
use crate::config::PretrainConfig;
use crate::grads::GradMap;
use crate::image::Dataset;
use crate::lars::Lars;
use crate::loader::{LoaderConfig, PairLoader};
use crate::metrics::{MetricsLog, Record};
use crate::optim::{Optimizer, Sgd};
use crate::probe::OnlineProbe;
use crate::schedule::{scaled_lr, tau, WarmupCosine};
use crate::subset::Subset;

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug)]
pub struct PretrainOutcome {
    pub run_dir: PathBuf,
    pub steps_done: usize,
    pub total_steps: usize,
    /// kNN top-1 of the encoder at random initialisation (first kNN of a fresh run).
    pub knn_random_init: Option<f64>,
    /// kNN top-1 of the final encoder.
    pub knn_final: Option<f64>,
    pub last_loss: f32,
}

/// Opens the configured data set split (auto-discovering Fashion-MNIST), limited to `limit`.
pub fn open_dataset(cfg: &PretrainConfig, split: &str, limit: usize) -> Result<Arc<dyn Dataset>> {
    let dir = if cfg.data.dir.is_empty() {
        match crate::datasets::canonical_name(&cfg.data.dataset)? {
            "fashion-mnist" => crate::datasets::find_fashion_mnist().context(
                "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist, set BYOL_DATA, or set data.dir",
            )?,
            other => bail!("data.dir is empty: give the folder of the {other} data set"),
        }
    } else {
        PathBuf::from(&cfg.data.dir)
    };
    let ds: Arc<dyn Dataset> = Arc::from(crate::datasets::open(&cfg.data.dataset, &dir, split.parse()?)?);
    Subset::first(ds, limit)
}

/// The augmentation configuration of a run (preset, with `data.image_size` applied).
pub fn augment_config(cfg: &PretrainConfig) -> Result<crate::augment::AugmentConfig> {
    let mut aug = crate::augment::preset(&cfg.data.augment)?;
    if cfg.data.image_size > 0 {
        aug.view1.size = cfg.data.image_size;
        aug.view2.size = cfg.data.image_size;
        aug.view1.blur_kernel = None;
        aug.view2.blur_kernel = None;
        aug.eval.crop = cfg.data.image_size;
        aug.eval.resize = cfg.data.image_size;
    }
    if !cfg.data.augment_overrides.is_empty() {
        let mut doc = toml::Value::try_from(&aug).context("augmentation preset")?;
        crate::config::apply_overrides(&mut doc, &cfg.data.augment_overrides)?;
        aug =
            doc.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("data.augment_overrides: {}", e.message()))?;
    }
    aug.validate().context("data.augment_overrides")?;
    Ok(aug)
}

/// Runs (or resumes, when `run_dir` holds a checkpoint and `resume` is set) a pretraining run.
///
/// Data-parallel when the process collective ([`crate::distributed::global`]) has several
/// ranks: each rank trains on its shard of every global batch, gradients are averaged over
/// ranks, and only rank 0 writes files (config, metrics, checkpoints, plots) and evaluates.
pub fn pretrain(cfg: &PretrainConfig, resume: bool) -> Result<PretrainOutcome> {
    crate::backend::set_threads(cfg.run.threads);
    let dist = crate::distributed::global();
    let root = dist.rank() == 0;
    crate::distributed::set_sync_bn(cfg.run.sync_bn);
    let device = crate::backend::device(&cfg.run.device)?;
    let ad = device.clone().autodiff();
    let run_dir = PathBuf::from(&cfg.run.out_dir);
    let ckpt_dir = run_dir.join("checkpoints");
    if root {
        std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
        crate::fsutil::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    }

    let dataset = open_dataset(cfg, &cfg.data.split, cfg.data.limit)?;
    let aug = augment_config(cfg)?;
    let micro = cfg.optim.batch_size / cfg.optim.accumulate;
    let loader = PairLoader::new_sharded(
        dataset.clone(),
        aug.clone(),
        LoaderConfig { batch_size: micro, drop_last: true, shuffle: true, seed: cfg.run.seed, prefetch: 3, threads: 0 },
        dist.rank(),
        dist.size(),
    )?;
    let steps_per_epoch = loader.batches_per_epoch() / cfg.optim.accumulate;
    if steps_per_epoch == 0 {
        bail!("the data set has {} images: fewer than one batch of {}", dataset.len(), cfg.optim.batch_size);
    }
    let total_steps = steps_per_epoch * cfg.optim.epochs;
    let lr_schedule = WarmupCosine {
        peak: scaled_lr(cfg.optim.base_lr, cfg.optim.batch_size),
        warmup_steps: (cfg.optim.warmup_epochs * steps_per_epoch as f64).round() as usize,
        total_steps,
    };

    let mut model = Byol::new(cfg.model.clone(), cfg.run.seed, &ad)?;
    let mut opt = optimizer(&cfg.optim);
    let num_classes = dataset.num_classes();
    let mut probe = OnlineProbe::new(
        cfg.model.encoder.out_dim(),
        num_classes.unwrap_or(1),
        cfg.monitor.probe_lr,
        cfg.run.seed,
        &ad,
    );
    let probe_on = cfg.monitor.online_probe && num_classes.is_some();

    let mut step = 0usize;
    let mut metrics = if root { MetricsLog::open(&run_dir.join("metrics.jsonl"))? } else { MetricsLog::in_memory() };
    if resume {
        let path = checkpoint::latest(&ckpt_dir)?
            .with_context(|| format!("no checkpoint to resume from in {}", ckpt_dir.display()))?;
        let ck = Checkpoint::load(&path)?;
        let src = path.display().to_string();
        model.online.load_host(&ck.online, &src, |_| false)?;
        model.target.load_host(&ck.target, &src, |_| false)?;
        probe.params.load_host(&ck.probe, &src, |_| false)?;
        opt.load_state(&ck.optimizer, &device)?;
        probe.opt.load_state(&ck.probe_optimizer, &device)?;
        step = ck.step;
        metrics.truncate_after(step)?;
        if root {
            eprintln!("resuming from {} (step {step} of {total_steps})", path.display());
        }
    } else {
        metrics.clear()?;
        if !cfg.run.init_from.is_empty() {
            let from = Path::new(&cfg.run.init_from);
            crate::encoder_load::init_encoder_from(&mut model.online, "encoder.", &cfg.model.encoder, from)
                .with_context(|| format!("run.init_from = {}", from.display()))?;
            model.reset_target();
            if root {
                eprintln!("encoder initialised from {}", from.display());
            }
        }
    }

    let knn = if root { crate::monitor::KnnMonitor::new(cfg, &aug, num_classes.is_some())? } else { None };
    let mut outcome = PretrainOutcome {
        run_dir: run_dir.clone(),
        steps_done: step,
        total_steps,
        knn_random_init: metrics.first_knn(),
        knn_final: None,
        last_loss: f32::NAN,
    };
    if step == 0 {
        if let Some(k) = &knn {
            let acc = k.evaluate(&model, &device)?;
            eprintln!("kNN top-1 at random init: {:.2}%", acc.0 * 100.0);
            metrics.write(&Record::epoch(0, 0, acc.0, acc.1, None))?;
            outcome.knn_random_init = Some(acc.0);
        }
    }

    let bar = if root { progress_bar(total_steps as u64, step as u64) } else { None };
    let stop_at = if cfg.run.stop_after > 0 { (step + cfg.run.stop_after).min(total_steps) } else { total_steps };
    let d = cfg.model.projector.out as f64;
    let mut collapsed_for = 0usize;
    let (mut probe_correct, mut probe_seen) = (0usize, 0usize);
    let inner = device.clone().inner();

    while step < stop_at {
        let epoch = step / steps_per_epoch;
        let start_micro = (step % steps_per_epoch) * cfg.optim.accumulate;
        let usable = steps_per_epoch * cfg.optim.accumulate;
        let mut batches = loader.epoch(epoch as u64, start_micro)?.take(usable - start_micro);
        let mut t0 = Instant::now();
        let (epoch_t0, epoch_step0) = (t0, step);
        while step < stop_at && step / steps_per_epoch == epoch {
            crate::distributed::inject_fault(step)?;
            let lr = lr_schedule.at(step);
            let tau_k = tau(cfg.optim.tau_base, step, total_steps);
            let mut grads = GradMap::default();
            let (mut loss, mut z_std) = (0f32, 0f32);
            for _ in 0..cfg.optim.accumulate {
                let b = batches.next().context("the data loader ended early")??;
                let v1 = Tensor::<4>::from_data(TensorData::new(b.view1, b.shape), &inner);
                let v2 = Tensor::<4>::from_data(TensorData::new(b.view2, b.shape), &inner);
                let out = model.forward_backward(v1, v2);
                loss += out.loss / cfg.optim.accumulate as f32;
                z_std += out.z_std / cfg.optim.accumulate as f32;
                grads.accumulate(out.grads);
                // Batches with unlabelled images (e.g. STL-10 train+unlabeled) do not train the probe.
                let labels: Option<Vec<usize>> = b.labels.iter().copied().collect();
                // Data-parallel: the probe trains only when every replica's shard is labelled.
                let labels = if probe_on {
                    let all = crate::distributed::all_true(labels.is_some());
                    labels.filter(|_| all)
                } else {
                    None
                };
                if let Some(labels) = labels {
                    let (_, c) = probe.step(out.y1, &labels);
                    probe_correct += c;
                    probe_seen += labels.len();
                }
            }
            if dist.size() > 1 {
                // Every rank applies the gradient of the global mean loss; logged values are
                // means over ranks, so every rank takes the same stop decisions.
                crate::distributed::average_gradients(&mut grads)?;
                let mut v = [loss, z_std];
                crate::distributed::all_reduce_mean(&mut v);
                [loss, z_std] = v;
            }
            if !loss.is_finite() {
                bail!(
                    "loss became {loss} at step {step} (epoch {epoch}); the run stopped and the last good checkpoint in {} is intact. Lower optim.base_lr or check the data.",
                    ckpt_dir.display()
                );
            }
            if cfg.optim.accumulate > 1 {
                grads.scale(1.0 / cfg.optim.accumulate as f32);
            }
            model.apply(&grads, opt.as_mut(), lr, tau_k);
            step += 1;
            outcome.last_loss = loss;
            outcome.steps_done = step;

            let healthy = 1.0 / d.sqrt();
            if (z_std as f64) < cfg.monitor.collapse_ratio * healthy {
                collapsed_for += 1;
                if collapsed_for == 1 && root {
                    eprintln!("warning: step {step}: representations look collapsed (std of normalised projections {z_std:.2e}, healthy ≈ {healthy:.2e})");
                }
                if cfg.monitor.collapse_patience > 0 && collapsed_for >= cfg.monitor.collapse_patience {
                    bail!("representations collapsed: the std of normalised projections stayed below {:.2e} for {collapsed_for} steps (last {z_std:.2e}); stopped at step {step}. Check the predictor, τ and the learning rate.", cfg.monitor.collapse_ratio * healthy);
                }
            } else {
                collapsed_for = 0;
            }

            if step.is_multiple_of(cfg.run.log_every.max(1)) || step == stop_at {
                let secs = t0.elapsed().as_secs_f64();
                let ips = (cfg.run.log_every.max(1) * cfg.optim.batch_size) as f64 / secs.max(1e-9);
                t0 = Instant::now();
                let probe_acc = (probe_seen > 0).then(|| probe_correct as f64 / probe_seen as f64);
                metrics.write(&Record::step(step, epoch, loss, lr, tau_k, ips, z_std, probe_acc))?;
                let msg = format!("epoch {} loss {loss:.4} lr {lr:.4} τ {tau_k:.5} {ips:.0} img/s", epoch + 1);
                match &bar {
                    Some(b) => {
                        b.set_position(step as u64);
                        b.set_message(msg);
                    }
                    None if root => eprintln!("step {step}/{total_steps} {msg}"),
                    None => {}
                }
            }
            if root && cfg.run.checkpoint_every > 0 && step.is_multiple_of(cfg.run.checkpoint_every) {
                save(cfg, &model, opt.as_ref(), &probe, step, &ckpt_dir)?;
            }
        }
        drop(batches);
        if step.is_multiple_of(steps_per_epoch) {
            let epoch_done = step / steps_per_epoch;
            if root {
                let (secs, images) = (epoch_t0.elapsed().as_secs_f64(), (step - epoch_step0) * cfg.optim.batch_size);
                eprintln!("epoch {epoch_done}: {images} images in {secs:.1} s ({:.0} img/s)", images as f64 / secs);
            }
            let probe_acc = (probe_seen > 0).then(|| probe_correct as f64 / probe_seen as f64);
            (probe_correct, probe_seen) = (0, 0);
            let last = epoch_done == cfg.optim.epochs;
            if let Some(k) = &knn {
                if last || (cfg.monitor.knn_every > 0 && epoch_done.is_multiple_of(cfg.monitor.knn_every)) {
                    let acc = k.evaluate(&model, &device)?;
                    eprintln!("epoch {epoch_done}: kNN top-1 {:.2}% top-5 {:.2}%", acc.0 * 100.0, acc.1 * 100.0);
                    metrics.write(&Record::epoch(step, epoch_done, acc.0, acc.1, probe_acc))?;
                    if last {
                        outcome.knn_final = Some(acc.0);
                    }
                }
            }
            if root && (cfg.run.checkpoint_every == 0 || !step.is_multiple_of(cfg.run.checkpoint_every)) {
                save(cfg, &model, opt.as_ref(), &probe, step, &ckpt_dir)?;
            }
            if root {
                if let Err(e) = metrics.plot(&run_dir.join("curves.png")) {
                    eprintln!("warning: could not draw the curves: {e:#}");
                }
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if root
        && !step.is_multiple_of(steps_per_epoch)
        && (cfg.run.checkpoint_every == 0 || !step.is_multiple_of(cfg.run.checkpoint_every))
    {
        save(cfg, &model, opt.as_ref(), &probe, step, &ckpt_dir)?;
    }
    if root && step == total_steps {
        model.online.sub("encoder.").save_safetensors(&run_dir.join("encoder.safetensors"), "")?;
    }
    Ok(outcome)
}

/// The pretraining optimizer named by `optim.optimizer` (validated by the config).
fn optimizer(o: &crate::config::OptimConfig) -> Box<dyn Optimizer> {
    let (m, wd) = (o.momentum as f32, o.weight_decay as f32);
    match o.optimizer.as_str() {
        "sgd" => Box::new(Sgd::new(m, wd, false)),
        _ => Box::new(Lars::new(m, wd, o.eta as f32)),
    }
}

fn save(
    cfg: &PretrainConfig,
    model: &Byol,
    opt: &dyn Optimizer,
    probe: &OnlineProbe,
    step: usize,
    dir: &Path,
) -> Result<()> {
    let ck = Checkpoint::capture(
        step,
        &model.online,
        &model.target,
        opt.state(),
        &probe.params,
        probe.opt.state(),
        cfg.to_toml(),
    );
    // A diverging optimizer can overflow the weights while the loss still looks finite (BatchNorm
    // normalises the blow-up away): such a state is never written over the last good one.
    let mut tensors = ck.online.iter().chain(ck.target.iter());
    if let Some((name, _)) = tensors.find(|(_, (_, v))| v.iter().any(|x| !x.is_finite())) {
        bail!(
            "parameter {name} became non-finite at step {step}; the run stopped and the last good checkpoint in {} is intact. Lower optim.base_lr or optim.weight_decay.",
            dir.display()
        );
    }
    ck.save(dir, cfg.run.keep_checkpoints)?;
    Ok(())
}

fn progress_bar(total: u64, pos: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_position(pos);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}")
    {
        bar.set_style(style);
    }
    Some(bar)
}
