//! The evaluation and interoperability commands end to end, on tiny models (width 2–4) and
//! tiny image folders generated on the fly: export/import round trips, `byol embed` against
//! `extract`, label-subset reuse, fine-tuning on a separable set, kNN, init-from, CLI errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use byol::byol::{Byol, ByolConfig};
use byol::checkpoint::Checkpoint;
use byol::cli_eval::{DataArgs, EncoderArgs, ExportWhat, FinetuneArgs, KnnArgs, LinearArgs, LinearMethod};
use byol::config::PretrainConfig;
use byol::encoder_load::{arch_string, init_encoder_from, load_model};
use byol::heads::MlpConfig;
use byol::params::{write_safetensors, ParamSet};
use byol::resnet::{self, ResNetConfig, Stem};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn arch(width: usize) -> ResNetConfig {
    ResNetConfig { depth: 18, width, stem: Stem::Cifar, in_channels: 1, zero_init_residual: false }
}

/// A random encoder with non-trivial BN statistics (so buffers are checked too).
fn encoder(width: usize, seed: u64) -> ParamSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ps = resnet::init(&arch(width), &mut rng, &Device::flex()).unwrap();
    let host: byol::params::HostTensors = ps
        .to_host()
        .into_iter()
        .map(|(k, (s, v))| {
            let v = if k.contains("running") { v.iter().map(|_| rng.gen_range(0.5f32..1.5)).collect() } else { v };
            (k, (s, v))
        })
        .collect();
    ps.load_host(&host, "test", |_| false).unwrap();
    ps
}

/// `root/{train,test}/{dark,bright}/*.png`: 8×8 grayscale, dark (≈40) or bright (≈210) with noise.
fn image_folder(root: &Path, per_class: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for split in ["train", "test"] {
        for (class, base) in [("bright", 210u8), ("dark", 40u8)] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let img =
                    image::GrayImage::from_fn(8, 8, |_, _| image::Luma([base.saturating_add(rng.gen_range(0..30))]));
                img.save(dir.join(format!("img{i:02}.png"))).unwrap();
            }
        }
    }
}

fn enc_args(checkpoint: &Path) -> EncoderArgs {
    EncoderArgs {
        checkpoint: checkpoint.to_path_buf(),
        arch: None,
        target: false,
        device: "flex".into(),
        threads: 0,
        batch_size: 16,
    }
}

fn data_args(root: &Path) -> DataArgs {
    DataArgs {
        dataset: "folder".into(),
        data: Some(root.to_path_buf()),
        augment: Some("grayscale".into()),
        image_size: 8,
        train_limit: 0,
        test_limit: 0,
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_byol"))
}

#[test]
fn export_import_round_trip_is_lossless() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = encoder(2, 1);
    // A bare state dict as PyTorch would write it, with a classifier that must be ignored.
    let mut bare = enc.to_host();
    bare.insert("fc.weight".into(), (vec![3, 16], vec![0.5; 48]));
    bare.insert("fc.bias".into(), (vec![3], vec![0.1; 3]));
    let bare_path = tmp.path().join("bare.safetensors");
    write_safetensors(&bare_path, &bare).unwrap();

    // Architecture inferred from shapes, exported, re-imported from the export's metadata.
    let m = load_model(&bare_path, None, false).unwrap();
    assert_eq!(m.arch, arch(2));
    let out = tmp.path().join("enc.safetensors");
    assert_eq!(byol::export::export_model(&m, ExportWhat::Encoder, &out).unwrap(), enc.len() + 2);
    let back = load_model(&out, None, false).unwrap().encoder_params(&Device::flex()).unwrap();
    assert_eq!(back.to_host(), enc.to_host());

    // A checkpoint: online and target networks survive `--what all` bit for bit.
    let cfg = PretrainConfig::load(
        Some("fashion-mnist"),
        None,
        &[
            "model.encoder.width=2".into(),
            "model.projector.hidden=8".into(),
            "model.projector.out=4".into(),
            "model.predictor.hidden=8".into(),
            "model.predictor.out=4".into(),
        ],
    )
    .unwrap();
    let mut model = Byol::new(cfg.model.clone(), 3, &Device::flex()).unwrap();
    byol::ema::update(&mut model.target, &encoder_like(&model.online), 0.5);
    let ck = Checkpoint::capture(
        5,
        &model.online,
        &model.target,
        Default::default(),
        &ParamSet::new(),
        Default::default(),
        cfg.to_toml(),
    );
    let ck_path = ck.save(tmp.path(), 1).unwrap();
    let m = load_model(&ck_path, None, true).unwrap();
    assert_eq!(m.arch, cfg.model.encoder);
    let all = tmp.path().join("all.safetensors");
    byol::export::export_model(&m, ExportWhat::All, &all).unwrap();
    let again = load_model(&all, None, true).unwrap();
    assert_eq!(again.online.unwrap(), model.online.to_host());
    assert_eq!(again.target.unwrap(), model.target.to_host());
    assert_ne!(model.online.to_host(), model.target.to_host(), "the test needs online ≠ target");
    assert_eq!(again.encoder, model.online.sub("encoder.").to_host());
}

/// Online parameters perturbed, to make the target differ from the online network.
fn encoder_like(online: &ParamSet) -> ParamSet {
    let host = online.to_host().into_iter().map(|(k, (s, v))| (k, (s, v.iter().map(|x| x + 0.25).collect()))).collect();
    let mut p = online.clone();
    p.load_host(&host, "test", |_| false).unwrap();
    p
}

#[test]
fn embed_writes_extract_output_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    image_folder(&root, 5);
    let enc = encoder(2, 2);
    let enc_path = tmp.path().join("enc.safetensors");
    enc.save_safetensors(&enc_path, "").unwrap();
    let out = tmp.path().join("emb.npy");
    let status = bin()
        .args(["embed", "--checkpoint"])
        .arg(&enc_path)
        .args(["--folder"])
        .arg(root.join("test"))
        .args(["--augment", "grayscale", "--image-size", "8", "--batch-size", "3", "--output"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let (values, rows, cols) = byol::npy::read_npy_f32(&out).unwrap();
    assert_eq!((rows, cols), (10, 16));

    let ds = std::sync::Arc::new(byol::datasets::ImageFolder::open(&root.join("test")).unwrap());
    let aug = byol::eval_data::eval_augment("folder", Some("grayscale"), None, 8).unwrap();
    let f = byol::extract::extract(&arch(2), &enc, "", ds, &aug, 4, &Device::flex(), |_, _| {}).unwrap();
    let max_diff = values.iter().zip(&f.values).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-5, "embed and extract differ by {max_diff}");

    let index = std::fs::read_to_string(tmp.path().join("emb.index.csv")).unwrap();
    let lines: Vec<&str> = index.lines().collect();
    assert_eq!(lines.len(), 11);
    assert_eq!(lines[0], "row,index,file,label");
    assert_eq!(lines[1], format!("0,0,{},0", Path::new("bright").join("img00.png").display()));
    assert!(lines[10].ends_with("img04.png,1"), "{}", lines[10]);
}

fn finetune_args(ck: &Path, root: &Path, out: PathBuf, subset: Option<PathBuf>) -> FinetuneArgs {
    FinetuneArgs {
        encoder: enc_args(ck),
        data: data_args(root),
        label_fraction: 0.5,
        subset,
        epochs: 12,
        lrs: vec![0.1],
        holdout: 0.2,
        train_batch: 8,
        seed: 3,
        out,
    }
}

#[test]
fn finetune_learns_a_separable_set_and_reuses_its_subset() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    image_folder(&root, 12);
    let enc_path = tmp.path().join("enc.safetensors");
    encoder(4, 4).save_safetensors(&enc_path, "").unwrap();

    let out1 = tmp.path().join("ft1");
    let a = byol::finetune::run_finetune(&finetune_args(&enc_path, &root, out1.clone(), None)).unwrap();
    assert_eq!(a.subset.indices.len(), 12, "half of 12 images of each of 2 classes");
    assert_eq!(a.subset.class_counts(&[vec![0; 12], vec![1; 12]].concat()), vec![6, 6]);
    assert!(a.report.top1 >= 0.9, "fine-tuned top-1 {} on a trivially separable set", a.report.top1);
    assert!(a.epoch_losses.last().unwrap() < a.epoch_losses.first().unwrap(), "{:?}", a.epoch_losses);
    for f in ["finetune.json", "finetune-confusion.png", "label-subset.json", "finetuned.safetensors"] {
        assert!(out1.join(f).is_file(), "{f} missing");
    }
    // The fine-tuned weights (with their fc head) load back as an encoder.
    load_model(&out1.join("finetuned.safetensors"), None, false).unwrap().encoder_params(&Device::flex()).unwrap();

    let mut args = finetune_args(&enc_path, &root, tmp.path().join("ft2"), Some(out1.join("label-subset.json")));
    args.label_fraction = 0.25; // ignored: the file decides
    args.seed = 99;
    args.epochs = 1;
    let b = byol::finetune::run_finetune(&args).unwrap();
    assert_eq!(b.subset, a.subset);
}

#[test]
fn finetune_lr_sweep_marks_a_diverging_lr_failed_and_is_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    image_folder(&root, 10);
    let enc_path = tmp.path().join("enc.safetensors");
    encoder(4, 4).save_safetensors(&enc_path, "").unwrap();
    let sweep_args = |out: &str| {
        let mut a = finetune_args(&enc_path, &root, tmp.path().join(out), None);
        (a.label_fraction, a.epochs, a.holdout) = (1.0, 4, 0.2);
        a.lrs = vec![0.05, 1e20, 0.2];
        a
    };
    let a = byol::finetune::run_finetune(&sweep_args("sw1")).unwrap();
    let lrs: Vec<f64> = a.sweep.iter().map(|t| t.lr).collect();
    assert_eq!(lrs, vec![0.05, 1e20, 0.2], "every candidate is a trial");
    let huge = &a.sweep[1];
    assert!(huge.holdout_top1.is_none() && huge.failed.as_deref().unwrap().contains("diverged"), "{huge:?}");
    let ok: Vec<_> = a.sweep.iter().filter(|t| t.failed.is_none()).collect();
    assert_eq!(ok.len(), 2, "{:?}", a.sweep);
    let best = ok.iter().map(|t| t.holdout_top1.unwrap()).fold(0.0, f64::max);
    let chosen = a.sweep.iter().find(|t| t.lr == a.best_lr).unwrap();
    assert_eq!(chosen.holdout_top1, Some(best), "chosen lr {} is not the best of {:?}", a.best_lr, a.sweep);
    // 2 held out per class (20% of 10), scored on the held-out slice only.
    assert_eq!(a.report.params["holdout_images"], 4);
    assert_eq!(a.report.params["best_lr"], a.best_lr);
    let written = byol::report::EvalReport::read_json(&tmp.path().join("sw1/finetune.json")).unwrap();
    let trials = written.params["sweep"].as_array().unwrap();
    assert_eq!(trials.len(), 3);
    assert!(trials[1]["holdout_top1"].is_null() && trials[1]["failed"].is_string(), "{trials:?}");
    assert!(trials[0]["holdout_top1"].is_f64() && trials[0]["failed"].is_null(), "{trials:?}");
    assert!(tmp.path().join("sw1/finetune-confusion.png").is_file());

    let b = byol::finetune::run_finetune(&sweep_args("sw2")).unwrap();
    assert_eq!((b.best_lr, &b.sweep, b.report.top1), (a.best_lr, &a.sweep, a.report.top1), "same seed");
    assert_eq!(b.epoch_losses, a.epoch_losses);

    // Every trial starts from the pretrained weights and the same fresh head: nothing leaks
    // from one trial (weights, BatchNorm statistics) into the next.
    let mut args = sweep_args("sw3");
    (args.lrs, args.epochs) = (vec![0.1, 0.1], 2);
    let c = byol::finetune::run_finetune(&args).unwrap();
    assert_eq!(c.sweep[0], c.sweep[1]);
}

#[test]
fn finetune_rejects_bad_lrs_and_holdout() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let o = bin()
            .args(["finetune", "--checkpoint", "missing.safetensors", "--dataset", "folder", "--out"])
            .arg(tmp.path().join("ft"))
            .args(extra)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{extra:?} was accepted");
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    for bad in ["0", "0.1,-1", "inf"] {
        let err = run(&["--lrs", bad]);
        assert!(err.contains("--lrs") && err.contains("positive"), "--lrs {bad}: {err}");
    }
    for bad in ["abc", "", "0.1,,0.2"] {
        let err = run(&["--lrs", bad]);
        assert!(err.contains("invalid value") && err.contains("--lrs"), "--lrs {bad:?}: {err}");
    }
    let err = run(&["--lr", "abc"]);
    assert!(err.contains("invalid value"), "--lr alias: {err}");
    let err = run(&["--holdout", "1"]);
    assert!(err.contains("--holdout must be in (0, 1)"), "{err}");
}

#[test]
fn knn_report_on_separable_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    image_folder(&root, 6);
    let enc_path = tmp.path().join("enc.safetensors");
    encoder(2, 5).save_safetensors(&enc_path, "").unwrap();
    let out = tmp.path().join("knn");
    let args =
        KnnArgs { encoder: enc_args(&enc_path), data: data_args(&root), k: 3, temperature: 0.1, out: out.clone() };
    let r = byol::evaluate::run_knn(&args).unwrap();
    assert_eq!(r.num_samples, 12);
    assert_eq!(r.class_names, vec!["bright".to_string(), "dark".to_string()]);
    assert_eq!(r.params["k_used"], 3);
    assert!(out.join("knn.json").is_file() && out.join("knn-confusion.png").is_file());
}

#[test]
fn init_from_loads_torchvision_weights_and_rejects_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = encoder(2, 6);
    let mut tv = enc.to_host();
    tv.insert("fc.weight".into(), (vec![10, 16], vec![0.0; 160]));
    let path = tmp.path().join("tv.safetensors");
    write_safetensors(&path, &tv).unwrap();
    let cfg = ByolConfig { encoder: arch(2), projector: MlpConfig::new(8, 4), predictor: MlpConfig::new(8, 4) };
    let ad = Device::flex().autodiff();
    let mut model = Byol::new(cfg.clone(), 0, &ad).unwrap();
    init_encoder_from(&mut model.online, "encoder.", &cfg.encoder, &path).unwrap();
    assert_eq!(model.online.sub("encoder.").to_host(), enc.to_host());
    assert!(model.online.get("encoder.conv1.weight").unwrap().value.is_autodiff());

    let wide = ByolConfig { encoder: arch(4), ..cfg };
    let mut model = Byol::new(wide.clone(), 0, &ad).unwrap();
    let err = format!("{:#}", init_encoder_from(&mut model.online, "encoder.", &wide.encoder, &path).unwrap_err());
    assert!(err.contains("tv.safetensors") && err.contains("shape"), "{err}");
}

#[test]
fn cli_errors_name_the_file_and_exit_nonzero() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-run");
    let o = bin().args(["export", "--checkpoint"]).arg(&missing).args(["--output", "x.safetensors"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");

    // A bare width-2 encoder forced to width 4: the mismatch names the file and the tensor.
    let enc_path = tmp.path().join("enc.safetensors");
    encoder(2, 8).save_safetensors(&enc_path, "").unwrap();
    let spec = arch_string(&arch(4));
    let o = bin()
        .args(["embed", "--checkpoint"])
        .arg(&enc_path)
        .args(["--arch", &spec, "--folder"])
        .arg(tmp.path())
        .args(["--output", "e.npy"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("enc.safetensors") && err.contains("conv1.weight"), "{err}");

    // A run directory without weights.
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.toml"), PretrainConfig::load(Some("fashion-mnist"), None, &[]).unwrap().to_toml())
        .unwrap();
    let o = bin().args(["export", "--checkpoint"]).arg(&run).args(["--output", "x.safetensors"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("checkpoints") && err.contains("no encoder.safetensors"), "{err}");
}

#[test]
fn linear_probe_with_crop_flip_and_logreg_separate_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    image_folder(&root, 8);
    let enc_path = tmp.path().join("enc.safetensors");
    // Fresh BatchNorm statistics: the randomised ones of `encoder` can silence every ReLU.
    let plain = resnet::init(&arch(4), &mut ChaCha8Rng::seed_from_u64(9), &Device::flex()).unwrap();
    plain.save_safetensors(&enc_path, "").unwrap();
    let mut args = LinearArgs {
        encoder: enc_args(&enc_path),
        data: data_args(&root),
        method: LinearMethod::Sgd,
        epochs: 6,
        probe_batch: 4,
        lr: vec![0.1],
        lambda: vec![],
        holdout: 0.25,
        standardize: true,
        crop_flip: true,
        seed: 1,
        out: tmp.path().join("lin"),
    };
    let r = byol::evaluate::run_linear(&args).unwrap();
    assert!(r.top1 >= 0.9, "crop+flip linear top-1 {}", r.top1);
    assert!(r.params["augmentation"].as_str().unwrap().contains("crop"));
    assert!(tmp.path().join("lin/linear.json").is_file());
    args.method = LinearMethod::Logreg;
    args.lambda = vec![1e-4, 1e-2];
    let r = byol::evaluate::run_linear(&args).unwrap();
    assert_eq!(r.method, "logreg");
    assert!(r.top1 >= 0.9, "logreg top-1 {}", r.top1);
    assert!(tmp.path().join("lin/logreg-confusion.png").is_file());
}
