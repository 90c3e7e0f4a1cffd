//! Checkpoints of a pretraining run: online and target networks, optimizer state, online probe,
//! and the step reached — everything an exact resume needs (data order and augmentations are
//! functions of (seed, epoch, index), so the step fixes them). Written atomically; the newest N
//! are kept, so an interrupted write or a failed run never loses the last good one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::optim::OptimState;
use crate::params::{read_safetensors_with_metadata, write_safetensors_with_metadata, HostTensors, ParamSet};

/// What a checkpoint holds, on the host.
pub struct Checkpoint {
    /// Optimizer steps completed.
    pub step: usize,
    pub online: HostTensors,
    pub target: HostTensors,
    pub optimizer: OptimState,
    pub probe: HostTensors,
    pub probe_optimizer: OptimState,
    /// Resolved configuration (TOML) of the run that wrote it.
    pub config: String,
}

fn prefixed(out: &mut HostTensors, prefix: &str, t: &HostTensors) {
    for (k, v) in t {
        out.insert(format!("{prefix}{k}"), v.clone());
    }
}

fn optim_tensors(out: &mut HostTensors, prefix: &str, s: &OptimState) {
    for (k, v) in &s.tensors {
        out.insert(format!("{prefix}{k}"), (vec![v.len()], v.clone()));
    }
}

fn take(all: &HostTensors, prefix: &str) -> HostTensors {
    all.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
}

fn take_optim(all: &HostTensors, prefix: &str, step: u64) -> OptimState {
    OptimState { step, tensors: take(all, prefix).into_iter().map(|(k, (_, v))| (k, v)).collect() }
}

impl Checkpoint {
    /// Collects the state from live parameter sets.
    pub fn capture(
        step: usize,
        online: &ParamSet,
        target: &ParamSet,
        optimizer: OptimState,
        probe: &ParamSet,
        probe_optimizer: OptimState,
        config: String,
    ) -> Self {
        Self {
            step,
            online: online.to_host(),
            target: target.to_host(),
            optimizer,
            probe: probe.to_host(),
            probe_optimizer,
            config,
        }
    }

    /// Writes `dir/step-NNNNNNNN.safetensors` atomically and removes all but the newest `keep`.
    pub fn save(&self, dir: &Path, keep: usize) -> Result<PathBuf> {
        let mut all = HostTensors::new();
        prefixed(&mut all, "online.", &self.online);
        prefixed(&mut all, "target.", &self.target);
        prefixed(&mut all, "probe.", &self.probe);
        optim_tensors(&mut all, "optim.", &self.optimizer);
        optim_tensors(&mut all, "probe_optim.", &self.probe_optimizer);
        let meta = HashMap::from([
            ("format".to_string(), "byol-checkpoint-1".to_string()),
            ("step".to_string(), self.step.to_string()),
            ("optim_step".to_string(), self.optimizer.step.to_string()),
            ("probe_optim_step".to_string(), self.probe_optimizer.step.to_string()),
            ("config".to_string(), self.config.clone()),
        ]);
        let path = dir.join(format!("step-{:08}.safetensors", self.step));
        write_safetensors_with_metadata(&path, &all, Some(meta))?;
        let list = list(dir)?;
        for old in list.iter().take(list.len().saturating_sub(keep.max(1))) {
            std::fs::remove_file(old).with_context(|| format!("cannot remove old checkpoint {}", old.display()))?;
        }
        Ok(path)
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Self> {
        let (all, meta) = read_safetensors_with_metadata(path)?;
        if meta.get("format").map(String::as_str) != Some("byol-checkpoint-1") {
            bail!("{} is not a byol checkpoint (no byol-checkpoint-1 format tag)", path.display());
        }
        let num = |k: &str| -> Result<u64> {
            meta.get(k)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{}: checkpoint metadata lacks {k}", path.display()))
        };
        Ok(Self {
            step: num("step")? as usize,
            online: take(&all, "online."),
            target: take(&all, "target."),
            probe: take(&all, "probe."),
            optimizer: take_optim(&all, "optim.", num("optim_step")?),
            probe_optimizer: take_optim(&all, "probe_optim.", num("probe_optim_step")?),
            config: meta.get("config").cloned().unwrap_or_default(),
        })
    }
}

/// Checkpoint files of a folder, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read checkpoint folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("step-") && n.ends_with(".safetensors"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The newest checkpoint of a folder, if any.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(dir)?.pop())
}
