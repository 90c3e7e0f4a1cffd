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
    /// Data sets: download and inspect.
    #[command(subcommand)]
    Data(DataCommand),
    /// Time the full BYOL training step (ms/step, images/s).
    Bench(BenchArgs),
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

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download a data set (checksum-verified, atomic) and extract it into DIR.
    Download {
        /// cifar10, cifar100, stl10, mnist or fashion-mnist.
        name: String,
        #[arg(long)]
        dir: PathBuf,
        /// Download again even if the data set already opens from DIR.
        #[arg(long)]
        force: bool,
        /// Mirror to use instead of the canonical URL (the same file names below it).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Open a data set and print its size, classes and image shape.
    Info {
        name: String,
        /// Folder of the data set (Fashion-MNIST is found automatically when omitted).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "train")]
        split: String,
    },
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// ResNet depth.
    #[arg(long, default_value_t = 18)]
    pub depth: usize,
    /// Channels of the first stage (comma-separated list to run several).
    #[arg(long, default_value = "16,32,64", value_delimiter = ',')]
    pub width: Vec<usize>,
    /// Batch sizes (comma-separated).
    #[arg(long, default_value = "64,256", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Stem: cifar or imagenet.
    #[arg(long, default_value = "cifar")]
    pub stem: String,
    #[arg(long, default_value_t = 32)]
    pub image_size: usize,
    #[arg(long, default_value_t = 3)]
    pub in_channels: usize,
    /// Projector/predictor hidden and output sizes.
    #[arg(long, default_value_t = 4096)]
    pub hidden: usize,
    #[arg(long, default_value_t = 256)]
    pub out: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// The machine's peak GFLOP/s (float32) for the "% of peak" column. Default: 2 cores ×
    /// 2.5 GHz × 64 FLOP/cycle (two AVX-512 FMA units) = 320, this project's CPU machine.
    #[arg(long, default_value_t = 320.0)]
    pub peak_gflops: f64,
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
    /// Train on several devices of `run.device` in this process, one data-parallel replica each:
    /// a count (`2`: devices 0 and 1) or device indices (`0,2`). Same as `--set run.devices=...`.
    #[arg(long, value_name = "N|I,J,..")]
    pub devices: Option<String>,
}

/// Parses the command line and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pretrain(a) => pretrain(a),
        Command::Bench(a) => bench(a),
        Command::Data(c) => data(c),
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
    if let Some(d) = &a.devices {
        overrides.push(format!("run.devices={d:?}"));
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
    // Several processes under mpirun: MPI is set up here and shut down when `session` drops.
    let session = crate::distributed::init_from_env()?;
    let root = crate::distributed::is_root();
    if root {
        println!("# resolved configuration\n{}", cfg.to_toml());
    }
    let out = match crate::replicas::parse_devices(&cfg.run.devices)? {
        Some(devices) if devices.len() > 1 => {
            if crate::distributed::global().size() > 1 {
                bail!("run.devices / --devices cannot be combined with mpirun: launch one process per device instead (docs/distributed.md)");
            }
            crate::replicas::run(&devices, || crate::pretrain::pretrain(&cfg, resume))?
        }
        _ => crate::pretrain::pretrain(&cfg, resume).map_err(|e| session.fail(e))?,
    };
    drop(session);
    if !root {
        return Ok(());
    }
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

fn bench(a: BenchArgs) -> Result<()> {
    crate::backend::set_threads(a.threads);
    let stem = match a.stem.as_str() {
        "cifar" => crate::resnet::Stem::Cifar,
        "imagenet" => crate::resnet::Stem::Imagenet,
        s => bail!("unknown stem {s:?}; valid: cifar, imagenet"),
    };
    println!(
        "| model | batch | image | ms/step (median of {}) | images/s | GFLOP/step | GFLOP/s | % of peak ({} GFLOP/s) | fastest ms |",
        a.steps, a.peak_gflops
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &width in &a.width {
        for &batch in &a.batch {
            let case = crate::bench::BenchCase {
                depth: a.depth,
                width,
                stem,
                in_channels: a.in_channels,
                image_size: a.image_size,
                batch,
                proj_hidden: a.hidden,
                proj_out: a.out,
            };
            let r = crate::bench::bench_step(&case, &a.device, a.warmup, a.steps)?;
            let rate = r.flops / 1e9 / (r.median_ms / 1e3);
            println!(
                "| resnet{}-{:?} w{} | {batch} | {}px | {:.1} | {:.1} | {:.2} | {rate:.1} | {:.1} | {:.1} |",
                a.depth,
                stem,
                width,
                a.image_size,
                r.median_ms,
                r.images_per_s,
                r.flops / 1e9,
                100.0 * rate / a.peak_gflops,
                r.fastest_ms
            );
        }
    }
    Ok(())
}

fn data(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Download { name, dir, force, base_url } => {
            let opts = crate::download::DownloadOptions { base_url, force, ..Default::default() };
            let path = crate::download::download(&name, &dir, &opts)?;
            println!("{name} is ready in {}", path.display());
        }
        DataCommand::Info { name, dir, split } => {
            let dir = match dir {
                Some(d) => d,
                None if crate::datasets::canonical_name(&name)? == "fashion-mnist" => {
                    crate::datasets::find_fashion_mnist().context("Fashion-MNIST not found: give --dir")?
                }
                None => bail!("give --dir for {name}"),
            };
            let ds = crate::datasets::open(&name, &dir, split.parse()?)?;
            let first = ds.get(0).with_context(|| format!("{name}: cannot read the first image"))?;
            println!(
                "{name} ({split}) in {}: {} images of {}x{}x{}, {} classes",
                dir.display(),
                ds.len(),
                first.image.height,
                first.image.width,
                first.image.channels,
                ds.num_classes().map(|c| c.to_string()).unwrap_or_else(|| "no".into())
            );
        }
    }
    Ok(())
}
