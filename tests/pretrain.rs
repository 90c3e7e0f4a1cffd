//! `byol pretrain` end to end on the real Fashion-MNIST (Debian package), with a tiny network:
//! exact resume after a kill, NaN stop keeping the last good checkpoint, configuration errors.

use std::path::Path;

use byol::config::PretrainConfig;
use byol::metrics::MetricsLog;
use byol::pretrain::pretrain;

fn have_fashion_mnist() -> bool {
    let found = byol::datasets::find_fashion_mnist().is_some();
    if !found {
        println!("SKIPPED: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
    }
    found
}

fn tiny(out: &Path, extra: &[&str]) -> PretrainConfig {
    let mut o: Vec<String> = [
        "model.encoder.width=2",
        "model.projector.hidden=16",
        "model.projector.out=8",
        "model.predictor.hidden=16",
        "model.predictor.out=8",
        "data.limit=64",
        "optim.batch_size=16",
        "optim.epochs=2",
        "monitor.knn_every=0",
        "run.log_every=1",
        "run.checkpoint_every=2",
        "run.keep_checkpoints=10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("run.out_dir={:?}", out.display().to_string()));
    o.extend(extra.iter().map(|s| s.to_string()));
    PretrainConfig::load(Some("fashion-mnist"), None, &o).unwrap()
}

#[test]
fn killed_and_resumed_run_reproduces_every_loss_bit_exactly() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Both pretraining optimizers (their momentum state is part of the checkpoint).
    for (name, opt) in [("lars", "optim.optimizer=\"lars\""), ("sgd", "optim.optimizer=\"sgd\"")] {
        let (a, b) = (dir.path().join(format!("a-{name}")), dir.path().join(format!("b-{name}")));
        let full = pretrain(&tiny(&a, &[opt]), false).unwrap();
        assert_eq!(full.steps_done, 8);
        let want = MetricsLog::open(&a.join("metrics.jsonl")).unwrap().losses();
        assert_eq!(want.len(), 8);
        assert!(want.iter().all(|(_, l)| l.is_finite()));

        // Stop after 5 steps, then pretend the process was killed before writing the checkpoint of
        // step 5: the newest checkpoint is step 4, and metrics.jsonl already holds step 5.
        let part = pretrain(&tiny(&b, &[opt, "run.stop_after=5"]), false).unwrap();
        assert_eq!(part.steps_done, 5);
        std::fs::remove_file(b.join("checkpoints/step-00000005.safetensors")).unwrap();
        let resumed = pretrain(&tiny(&b, &[opt]), true).unwrap();
        assert_eq!(resumed.steps_done, 8);
        let got = MetricsLog::open(&b.join("metrics.jsonl")).unwrap().losses();
        assert_eq!(got.len(), 8, "steps after the checkpoint are logged once: {got:?}");
        for ((sa, la), (sb, lb)) in want.iter().zip(&got) {
            assert_eq!(sa, sb);
            assert_eq!(la.to_bits(), lb.to_bits(), "{opt}: step {sa}: {la} vs {lb}");
        }
        // The final encoders are identical too.
        let ea = byol::params::read_safetensors(&a.join("encoder.safetensors")).unwrap();
        let eb = byol::params::read_safetensors(&b.join("encoder.safetensors")).unwrap();
        assert_eq!(ea, eb);
        assert!(a.join("curves.png").exists() && a.join("config.toml").exists());
    }
}

#[test]
fn non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nan");
    // lr 1e30 with weight decay 5e-4 overflows the weights at step 2 while that step's loss is
    // still finite (BatchNorm normalises the blow-up away); the NaN loss only comes at step 3.
    // Neither the overflowed state nor a NaN may replace the last good checkpoint.
    let cfg = tiny(
        &out,
        &["optim.base_lr=1e30", "optim.weight_decay=5e-4", "optim.warmup_epochs=0", "run.checkpoint_every=1"],
    );
    let err = format!("{:#}", pretrain(&cfg, false).unwrap_err());
    assert!(err.contains("at step"), "{err}");
    let ckpts = byol::checkpoint::list(&out.join("checkpoints")).unwrap();
    assert!(!ckpts.is_empty(), "the last good checkpoint must remain");
    let last = byol::checkpoint::Checkpoint::load(ckpts.last().unwrap()).unwrap();
    assert!(last.online.values().all(|(_, v)| v.iter().all(|x| x.is_finite())));
}

#[test]
fn configuration_errors_name_what_is_valid() {
    let err =
        format!("{:#}", PretrainConfig::load(Some("fashion-mnist"), None, &["optim.epoch=3".into()]).unwrap_err());
    assert!(err.contains("epoch") && err.contains("epochs"), "{err}");
    let err = format!("{:#}", PretrainConfig::load(Some("nope"), None, &[]).unwrap_err());
    assert!(err.contains("fashion-mnist") && err.contains("cifar10-resnet18"), "{err}");
    let err =
        format!("{:#}", PretrainConfig::load(Some("fashion-mnist"), None, &["optim.epochs=0".into()]).unwrap_err());
    let opt_err = format!(
        "{:#}",
        PretrainConfig::load(Some("fashion-mnist"), None, &["optim.optimizer=adam".into()]).unwrap_err()
    );
    assert!(opt_err.contains("adam") && opt_err.contains("lars") && opt_err.contains("sgd"), "{opt_err}");
    assert!(err.contains("epochs"), "{err}");
    let err = format!(
        "{:#}",
        PretrainConfig::load(Some("fashion-mnist"), None, &["model.encoder.depth=19".into()]).unwrap_err()
    );
    assert!(err.contains("18, 34, 50"), "{err}");
    let err =
        format!("{:#}", PretrainConfig::load(Some("fashion-mnist"), None, &["data.augment=\"x\"".into()]).unwrap_err());
    assert!(err.contains("imagenet") && err.contains("grayscale"), "{err}");
    for p in byol::config::PRESETS {
        PretrainConfig::load(Some(p), None, &[]).unwrap_or_else(|e| panic!("preset {p}: {e:#}"));
    }
}
