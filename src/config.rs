//! Pretraining configuration: a TOML file or a named preset, plus `key=value` overrides.
//! Unknown keys and bad values are errors that say what is valid. Defaults follow the paper
//! (§3.3, App. J) where the preset does not say otherwise.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::byol::ByolConfig;

/// Everything `byol pretrain` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    pub model: ByolConfig,
    pub data: DataConfig,
    pub optim: OptimConfig,
    pub monitor: MonitorConfig,
    pub run: RunConfig,
}

/// Which images to train on and how to augment them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// cifar10, cifar100, stl10, mnist, fashion-mnist or folder.
    pub dataset: String,
    /// Folder of the data set; empty = auto-discovery (Fashion-MNIST from its Debian package).
    #[serde(default)]
    pub dir: String,
    /// Split used for pretraining (train, test, unlabeled, train+unlabeled).
    #[serde(default = "default_split")]
    pub split: String,
    /// Use only the first N images (0 = all).
    #[serde(default)]
    pub limit: usize,
    /// Augmentation preset (imagenet, cifar, grayscale).
    pub augment: String,
    /// Image size of the views (0 = the preset's).
    #[serde(default)]
    pub image_size: usize,
    /// Changes to the augmentation preset, as `key=value` on its fields, e.g.
    /// `["view1.crop_scale=[0.2, 1.0]", "view2.solarize_p=0.1"]` (`byol presets` shows none;
    /// the fields are those of `AugmentConfig`: mean, std, view1, view2, eval).
    #[serde(default)]
    pub augment_overrides: Vec<String>,
}

fn default_split() -> String {
    "train".into()
}

/// LARS and schedules (paper §3.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub epochs: usize,
    /// Effective batch size (images per optimizer step).
    pub batch_size: usize,
    /// Micro-batches per optimizer step (gradient accumulation; target updated once per step).
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Learning rate per 256 images: lr = base_lr × batch_size / 256.
    pub base_lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default = "default_eta")]
    pub eta: f64,
    pub tau_base: f64,
    /// `lars` (the paper, App. C) or `sgd` (SGD with momentum; what small/short runs use, as
    /// solo-learn and lightly allow).
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
}

/// Valid values of `optim.optimizer`.
pub const OPTIMIZERS: [&str; 2] = ["lars", "sgd"];

fn default_optimizer() -> String {
    "lars".into()
}

fn one() -> usize {
    1
}
fn default_momentum() -> f64 {
    0.9
}
fn default_eta() -> f64 {
    1e-3
}

/// Monitoring during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// kNN evaluation every N epochs (0 = never); also before training and at the end.
    pub knn_every: usize,
    pub knn_k: usize,
    pub knn_temperature: f32,
    /// Labelled training images used as the kNN memory bank (0 = all).
    pub knn_train_limit: usize,
    /// Test images classified (0 = all).
    pub knn_test_limit: usize,
    /// Train a linear classifier on stop-grad(y) during pretraining (needs labels).
    pub online_probe: bool,
    pub probe_lr: f64,
    /// Collapse: std of L2-normalised projections below `collapse_ratio / √d` …
    pub collapse_ratio: f64,
    /// … for this many consecutive steps stops the run (0 = only warn).
    pub collapse_patience: usize,
}

/// Run directory, seed, checkpoints, logging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub seed: u64,
    pub out_dir: String,
    /// CPU threads (0 = all cores).
    #[serde(default)]
    pub threads: usize,
    /// Write a checkpoint every N optimizer steps (0 = only at epoch ends).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Checkpoints kept (the newest N).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Log line / metrics record every N steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Stop after this many optimizer steps in this process (0 = run to the end); the schedule
    /// still spans all epochs. Used to split a run in parts.
    #[serde(default)]
    pub stop_after: usize,
    /// Backend device: flex (CPU), vulkan, cuda.
    #[serde(default = "default_device")]
    pub device: String,
    /// Encoder weights loaded into the online and target networks before training (run
    /// directory, checkpoint, `byol export` file or torchvision state dict; `fc.*` ignored).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub init_from: String,
    /// Several devices in this process, one data-parallel replica each: a count (`"2"`) or
    /// device indices (`"0,1"`); empty = one device. Not combined with `mpirun`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub devices: String,
    /// Data-parallel runs (several replicas: `devices` or mpirun): BatchNorm statistics over the global
    /// batch of all replicas (true, the paper's setting) or over each replica's shard (false).
    #[serde(default = "default_true")]
    pub sync_bn: bool,
}

fn default_true() -> bool {
    true
}

fn default_keep() -> usize {
    2
}
fn default_log_every() -> usize {
    10
}
fn default_device() -> String {
    "flex".into()
}

/// Names of the built-in presets.
pub const PRESETS: [&str; 4] = ["fashion-mnist", "cifar10-resnet18", "imagenet-resnet50", "imagenet-resnet50-300ep"];

/// The TOML text of a preset.
pub fn preset_toml(name: &str) -> Result<&'static str> {
    Ok(match name {
        "fashion-mnist" => include_str!("../configs/fashion-mnist.toml"),
        "cifar10-resnet18" => include_str!("../configs/cifar10-resnet18.toml"),
        "imagenet-resnet50" => include_str!("../configs/imagenet-resnet50.toml"),
        "imagenet-resnet50-300ep" => include_str!("../configs/imagenet-resnet50-300ep.toml"),
        _ => bail!("unknown preset {name:?}; valid presets: {}", PRESETS.join(", ")),
    })
}

/// Applies `a.b.c=value` overrides to a TOML document. Values parse as TOML (numbers,
/// booleans, strings in quotes); anything else is taken as a plain string.
pub fn apply_overrides(doc: &mut toml::Value, overrides: &[String]) -> Result<()> {
    for ov in overrides {
        let Some((path, raw)) = ov.split_once('=') else {
            bail!("override {ov:?} is not of the form key.path=value");
        };
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_string())),
            Err(_) => toml::Value::String(raw.to_string()),
        };
        let keys: Vec<&str> = path.trim().split('.').collect();
        let mut cur = &mut *doc;
        for (i, k) in keys.iter().enumerate() {
            let table = cur.as_table_mut().with_context(|| format!("override {ov:?}: {k:?} is not inside a table"))?;
            if i + 1 == keys.len() {
                table.insert(k.to_string(), value.clone());
                break;
            }
            cur = table.entry(k.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        }
    }
    Ok(())
}

impl PretrainConfig {
    /// Parses and validates a TOML document; `source` names it in errors.
    pub fn from_value(doc: toml::Value, source: &str) -> Result<Self> {
        let cfg: PretrainConfig =
            doc.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("{source}: {}", e.message()))?;
        cfg.validate().with_context(|| format!("{source}: invalid configuration"))?;
        Ok(cfg)
    }

    /// Loads a preset or a file, then applies overrides.
    pub fn load(preset: Option<&str>, file: Option<&std::path::Path>, overrides: &[String]) -> Result<Self> {
        let (text, source) = match (preset, file) {
            (_, Some(f)) => (
                std::fs::read_to_string(f).with_context(|| format!("cannot read config {}", f.display()))?,
                f.display().to_string(),
            ),
            (Some(p), None) => (preset_toml(p)?.to_string(), format!("preset {p}")),
            (None, None) => bail!("give a --preset ({}) or a --config file", PRESETS.join(", ")),
        };
        let mut doc: toml::Value =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{source}: not valid TOML: {}", e.message()))?;
        apply_overrides(&mut doc, overrides)?;
        Self::from_value(doc, &source)
    }

    /// The resolved configuration as TOML text (printed and saved in the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks values serde cannot: ranges and names.
    pub fn validate(&self) -> Result<()> {
        self.model.encoder.validate()?;
        let o = &self.optim;
        if o.epochs == 0 {
            bail!("optim.epochs must be at least 1");
        }
        if o.batch_size == 0 || o.accumulate == 0 || !o.batch_size.is_multiple_of(o.accumulate) {
            bail!(
                "optim.batch_size ({}) must be a positive multiple of optim.accumulate ({})",
                o.batch_size,
                o.accumulate
            );
        }
        if !(o.base_lr > 0.0 && o.base_lr.is_finite()) {
            bail!("optim.base_lr must be a positive number, got {}", o.base_lr);
        }
        if !(0.0..=1.0).contains(&o.tau_base) {
            bail!("optim.tau_base must be in [0, 1], got {}", o.tau_base);
        }
        if !(0.0..1.0).contains(&o.momentum) || o.weight_decay < 0.0 || o.eta <= 0.0 || o.warmup_epochs < 0.0 {
            bail!("optim: momentum must be in [0, 1), weight_decay ≥ 0, eta > 0, warmup_epochs ≥ 0");
        }
        if !OPTIMIZERS.contains(&o.optimizer.as_str()) {
            bail!("optim.optimizer {:?} is not known; valid values: {}", o.optimizer, OPTIMIZERS.join(", "));
        }
        crate::pretrain::augment_config(self)?;
        crate::datasets::canonical_name(&self.data.dataset)?;
        self.data.split.parse::<crate::datasets::Split>()?;
        crate::backend::check_device_name(&self.run.device)?;
        crate::replicas::parse_devices(&self.run.devices)?;
        if self.model.projector.out != self.model.predictor.out {
            bail!(
                "model.predictor.out ({}) must equal model.projector.out ({})",
                self.model.predictor.out,
                self.model.projector.out
            );
        }
        Ok(())
    }
}
