//! Loading a trained encoder f (paper §3.3; the representation y every evaluation of App. C/D
//! uses) from whatever a user has at hand: a run directory of `byol pretrain`, one of its
//! checkpoint files, a file written by `byol export`, or a bare safetensors state dict with
//! torchvision names (e.g. saved from PyTorch, where `fc.*` and `num_batches_tracked` are
//! ignored).
//!
//! The architecture comes from, in order: `--arch`, the run's `config.toml` or the checkpoint's
//! embedded configuration, the `arch` metadata of a `byol export` file, and finally the tensor
//! shapes themselves (stem kernel, width, input channels, blocks per stage).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::PretrainConfig;
use crate::params::{read_safetensors_with_metadata, HostTensors, ParamSet};
use crate::resnet::{self, ResNetConfig, Stem};

/// A model read from disk, on the host.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Encoder architecture.
    pub arch: ResNetConfig,
    /// Online encoder tensors with torchvision names (no prefix).
    pub encoder: HostTensors,
    /// Whole online network (`encoder.*`, `projector.*`, `predictor.*`) when the source had it.
    pub online: Option<HostTensors>,
    /// Target network (`encoder.*`, `projector.*`) when the source had it.
    pub target: Option<HostTensors>,
    /// Pretraining configuration of the run, when known.
    pub run_config: Option<PretrainConfig>,
    /// The file the tensors came from (named in errors).
    pub source: PathBuf,
}

/// `depth=18,width=64,stem=cifar,in_channels=3[,zero_init_residual=false]`; missing keys take
/// the defaults of [`ResNetConfig`] (ResNet-18, width 64, CIFAR stem, 3 channels).
pub fn parse_arch(spec: &str) -> Result<ResNetConfig> {
    let mut cfg = ResNetConfig::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--arch: {part:?} is not key=value (keys: depth, width, stem, in_channels)"))?;
        let num = || v.trim().parse::<usize>().with_context(|| format!("--arch: {k}={v} is not a whole number"));
        match k.trim() {
            "depth" => cfg.depth = num()?,
            "width" => cfg.width = num()?,
            "in_channels" | "channels" => cfg.in_channels = num()?,
            "stem" => {
                cfg.stem = match v.trim() {
                    "cifar" => Stem::Cifar,
                    "imagenet" => Stem::Imagenet,
                    other => bail!("--arch: stem {other:?} is not cifar or imagenet"),
                }
            }
            "zero_init_residual" => cfg.zero_init_residual = v.trim() == "true",
            other => bail!("--arch: unknown key {other:?} (keys: depth, width, stem, in_channels)"),
        }
    }
    cfg.validate().context("--arch")?;
    Ok(cfg)
}

/// The `--arch` spelling of an architecture (stored as export metadata).
pub fn arch_string(cfg: &ResNetConfig) -> String {
    let stem = match cfg.stem {
        Stem::Cifar => "cifar",
        Stem::Imagenet => "imagenet",
    };
    format!("depth={},width={},stem={stem},in_channels={}", cfg.depth, cfg.width, cfg.in_channels)
}

/// Infers the architecture from torchvision-named encoder tensors.
pub fn infer_arch(t: &HostTensors, source: &str) -> Result<ResNetConfig> {
    let (shape, _) = t.get("conv1.weight").with_context(|| {
        format!("{source}: no conv1.weight, so this is not a ResNet encoder with torchvision names")
    })?;
    ensure!(shape.len() == 4, "{source}: conv1.weight has shape {shape:?}, expected 4 dimensions");
    let stem = match shape[2] {
        3 => Stem::Cifar,
        7 => Stem::Imagenet,
        k => bail!("{source}: conv1 has a {k}x{k} kernel; expected 3 (cifar stem) or 7 (imagenet stem)"),
    };
    let bottleneck = t.contains_key("layer1.0.conv3.weight");
    let blocks: Vec<usize> =
        (1..=4).map(|s| (0..).take_while(|b| t.contains_key(&format!("layer{s}.{b}.conv1.weight"))).count()).collect();
    let depth = [18, 34, 50, 101, 152, 200]
        .into_iter()
        .find(|&d| {
            let c = ResNetConfig { depth: d, ..Default::default() };
            c.layout().is_ok_and(|(b, l)| (b == resnet::Block::Bottleneck) == bottleneck && l.as_slice() == blocks)
        })
        .with_context(|| format!("{source}: blocks per stage {blocks:?} match no supported ResNet depth"))?;
    let cfg = ResNetConfig { depth, width: shape[0], stem, in_channels: shape[1], zero_init_residual: false };
    cfg.validate().with_context(|| format!("{source}: inferred architecture"))?;
    Ok(cfg)
}

/// The encoder architecture in a pretraining configuration's TOML text (`[model.encoder]`),
/// read leniently so that a run made by another build (other devices, presets) still loads.
pub fn arch_from_config_toml(text: &str, source: &str) -> Result<(ResNetConfig, Option<PretrainConfig>)> {
    let doc: toml::Value =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: not valid TOML: {}", e.message()))?;
    let enc = doc
        .get("model")
        .and_then(|m| m.get("encoder"))
        .with_context(|| format!("{source}: no [model.encoder] table"))?
        .clone();
    let arch: ResNetConfig =
        enc.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("{source}: [model.encoder]: {}", e.message()))?;
    arch.validate().with_context(|| format!("{source}: [model.encoder]"))?;
    let full = PretrainConfig::from_value(doc, source).ok();
    Ok((arch, full))
}

fn strip(all: &HostTensors, prefix: &str) -> HostTensors {
    all.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
}

/// Loads a model from `path`: a run directory, a checkpoint, an export or a bare encoder file.
/// `arch` (the `--arch` spec) overrides the architecture found in the source. `full`: the whole
/// online and target networks are wanted (a run directory then uses its newest checkpoint).
pub fn load_model(path: &Path, arch: Option<&str>, full: bool) -> Result<LoadedModel> {
    if !path.exists() {
        bail!(
            "checkpoint {} does not exist (give a run directory, a checkpoint file or an encoder .safetensors)",
            path.display()
        );
    }
    let mut run_arch = None;
    let file = if path.is_dir() {
        let cfg_path = path.join("config.toml");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!("{} is not a run directory: cannot read {}", path.display(), cfg_path.display())
        })?;
        run_arch = Some(arch_from_config_toml(&text, &cfg_path.display().to_string())?);
        let enc = path.join("encoder.safetensors");
        if enc.is_file() && !full {
            enc
        } else {
            let ck_dir = path.join("checkpoints");
            crate::checkpoint::latest(&ck_dir)?.with_context(|| {
                format!(
                    "run directory {} has no {}and no checkpoint in {}",
                    path.display(),
                    if full { "" } else { "encoder.safetensors " },
                    ck_dir.display()
                )
            })?
        }
    } else {
        path.to_path_buf()
    };
    let src = file.display().to_string();
    let (all, meta) = read_safetensors_with_metadata(&file)?;
    let format = meta.get("format").map(String::as_str).unwrap_or("");
    let (mut cfg_arch, mut run_config) = match run_arch {
        Some((a, c)) => (Some(a), c),
        None => (None, None),
    };
    let (encoder, online, target) = if format == "byol-checkpoint-1" {
        if cfg_arch.is_none() {
            let text =
                meta.get("config").with_context(|| format!("{src}: checkpoint has no embedded configuration"))?;
            let (a, c) = arch_from_config_toml(text, &format!("{src} (embedded configuration)"))?;
            (cfg_arch, run_config) = (Some(a), c);
        }
        let online = strip(&all, "online.");
        let target = strip(&all, "target.");
        (strip(&online, "encoder."), Some(online), Some(target))
    } else {
        if cfg_arch.is_none() {
            if let Some(a) = meta.get("arch") {
                cfg_arch = Some(parse_arch(a).with_context(|| format!("{src}: arch metadata"))?);
            }
        }
        let has = |p: &str| all.keys().any(|k| k.starts_with(p));
        let online = has("online.").then(|| strip(&all, "online."));
        let target = has("target.").then(|| strip(&all, "target."));
        let encoder = match &online {
            Some(o) => strip(o, "encoder."),
            None if has("encoder.") => strip(&all, "encoder."),
            None => all.clone(),
        };
        (encoder, online, target)
    };
    ensure!(!encoder.is_empty(), "{src}: no encoder tensors found");
    let arch = match arch {
        Some(spec) => parse_arch(spec)?,
        None => match cfg_arch {
            Some(a) => a,
            None => infer_arch(&encoder, &src)
                .context("give the architecture with --arch depth=…,width=…,stem=…,in_channels=…")?,
        },
    };
    Ok(LoadedModel { arch, encoder, online, target, run_config, source: file })
}

impl LoadedModel {
    /// Builds the encoder parameters (torchvision names, no prefix) on `device`, checking every
    /// tensor against the architecture. `fc.*` (a torchvision classifier) is ignored.
    pub fn encoder_params(&self, device: &Device) -> Result<ParamSet> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut ps = resnet::init(&self.arch, &mut rng, &device.clone().inner())?;
        load_encoder_tensors(
            &mut ps,
            &self.encoder,
            &format!("{} (architecture {})", self.source.display(), arch_string(&self.arch)),
        )?;
        Ok(ps.to_device(device))
    }
}

/// Overwrites an encoder parameter set from host tensors, ignoring a torchvision classifier
/// (`fc.*`) and `num_batches_tracked`; missing tensors and shape mismatches are errors naming
/// `source`.
pub fn load_encoder_tensors(ps: &mut ParamSet, values: &HostTensors, source: &str) -> Result<()> {
    ps.load_host(values, source, |k| k.starts_with("fc.") || k.ends_with("num_batches_tracked"))
}

/// Loads encoder weights from `path` (any source [`load_model`] accepts) into the `prefix`
/// tensors of `online`, whose architecture is `arch` (used by `byol pretrain` with
/// `run.init_from`).
pub fn init_encoder_from(online: &mut ParamSet, prefix: &str, arch: &ResNetConfig, path: &Path) -> Result<()> {
    let m = load_model(path, Some(&arch_string(arch)), false)?;
    let mut enc = online.sub(prefix);
    load_encoder_tensors(&mut enc, &m.encoder, &m.source.display().to_string())?;
    for p in enc.iter() {
        online.set(&format!("{prefix}{}", p.name), p.value.clone());
    }
    Ok(())
}
