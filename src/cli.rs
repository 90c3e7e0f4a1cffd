//! Command-line interface: `byol pretrain`, `byol data`, `byol eval`, `byol embed`, `byol export`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::PretrainConfig;

#[derive(Parser, Debug)]
#[command(name = "byol", version, about = "BYOL self-supervised pretraining, evaluation and export")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain an encoder with BYOL.
    Pretrain(PretrainArgs),
    /// Evaluate a frozen encoder (kNN, linear probe, logistic regression).
    #[command(subcommand)]
    Eval(crate::cli_eval::EvalCommand),
    /// Fine-tune encoder + linear head on a class-balanced label subset (1% / 10%).
    Finetune(crate::cli_eval::FinetuneArgs),
    /// Write the representations of a data set or image folder (.npy or .safetensors).
    Embed(crate::cli_eval::EmbedArgs),
    /// Export weights with torchvision names to safetensors.
    Export(crate::cli_eval::ExportArgs),
    /// Print a preset's configuration.
    Presets {
        /// Preset name (omit to list them).
        name: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Named preset (fashion-mnist, cifar10-resnet18, imagenet-resnet50, imagenet-resnet50-300ep).
    #[arg(long)]
    pub preset: Option<String>,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a key, e.g. `--set optim.epochs=3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Run directory (same as `--set run.out_dir=...`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its newest checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Start from these encoder weights (same as `--set run.init_from=...`).
    #[arg(long, value_name = "FILE")]
    pub init_from: Option<PathBuf>,
}

/// Parses the command line and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pretrain(a) => pretrain(a),
        Command::Eval(c) => crate::cli_eval::run_eval(c),
        Command::Finetune(a) => crate::cli_eval::run_finetune(&a),
        Command::Embed(a) => crate::cli_eval::run_embed(&a),
        Command::Export(a) => crate::cli_eval::run_export(&a),
        Command::Presets { name } => {
            match name {
                None => println!("{}", crate::config::PRESETS.join("\n")),
                Some(n) => print!("{}", crate::config::preset_toml(&n)?),
            }
            Ok(())
        }
    }
}

fn pretrain(a: PretrainArgs) -> Result<()> {
    let mut overrides = a.overrides.clone();
    if let Some(out) = &a.out {
        overrides.push(format!("run.out_dir={:?}", out.display().to_string()));
    }
    if let Some(f) = &a.init_from {
        overrides.push(format!("run.init_from={:?}", f.display().to_string()));
    }
    let (cfg, resume) = match &a.resume {
        Some(dir) => {
            if a.preset.is_some() || a.config.is_some() {
                bail!("--resume takes the configuration saved in the run directory; drop --preset/--config");
            }
            let file = dir.join("config.toml");
            let mut cfg = PretrainConfig::load(None, Some(&file), &overrides)
                .with_context(|| format!("cannot resume {}", dir.display()))?;
            cfg.run.out_dir = dir.display().to_string();
            (cfg, true)
        }
        None => (PretrainConfig::load(a.preset.as_deref(), a.config.as_deref(), &overrides)?, false),
    };
    println!("# resolved configuration\n{}", cfg.to_toml());
    let out = crate::pretrain::pretrain(&cfg, resume)?;
    println!("run directory: {}", out.run_dir.display());
    println!("steps: {}/{}  last loss: {:.4}", out.steps_done, out.total_steps, out.last_loss);
    match (out.knn_random_init, out.knn_final) {
        (Some(r), Some(f)) => println!(
            "kNN top-1 (k={}, T={}): random init {:.2}%  ->  BYOL {:.2}%  ({:+.2} points)",
            cfg.monitor.knn_k,
            cfg.monitor.knn_temperature,
            r * 100.0,
            f * 100.0,
            (f - r) * 100.0
        ),
        (Some(r), None) => println!("kNN top-1 at random init: {:.2}%", r * 100.0),
        _ => {}
    }
    Ok(())
}
