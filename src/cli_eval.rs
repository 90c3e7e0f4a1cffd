//! Command-line arguments of `byol eval knn|linear`, `byol finetune`, `byol embed` and
//! `byol export` (clap derive), and the encoder loading they share.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::{Args, Subcommand, ValueEnum};

use crate::encoder_load::{load_model, LoadedModel};
use crate::params::{HostTensors, ParamSet};

/// Where the encoder comes from and where it runs.
#[derive(Args, Debug, Clone)]
pub struct EncoderArgs {
    /// Run directory (config.toml + encoder.safetensors or checkpoints/), checkpoint file,
    /// `byol export` file or encoder .safetensors with torchvision names.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    /// Encoder architecture, e.g. `depth=18,width=64,stem=cifar,in_channels=3` (needed only for
    /// bare files whose shapes are ambiguous; overrides what the source says).
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<String>,
    /// Use the target (EMA) encoder instead of the online one (checkpoints only).
    #[arg(long)]
    pub target: bool,
    /// Backend device: flex (CPU), vulkan, cuda.
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
}

impl EncoderArgs {
    /// Loads the model and builds the chosen encoder on the (non-autodiff) device.
    pub fn load(&self) -> Result<(LoadedModel, ParamSet, Device)> {
        crate::backend::set_threads(self.threads);
        let device = crate::backend::device(&self.device)?;
        let mut model = load_model(&self.checkpoint, self.arch.as_deref(), self.target)?;
        if self.target {
            let target = model
                .target
                .as_ref()
                .with_context(|| format!("--target: {} has no target network", model.source.display()))?;
            model.encoder = strip(target, "encoder.");
        }
        let params = model.encoder_params(&device)?;
        Ok((model, params, device))
    }
}

fn strip(all: &HostTensors, prefix: &str) -> HostTensors {
    all.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
}

/// A labelled data set with train and test splits.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// cifar10, cifar100, stl10, mnist, fashion-mnist or folder.
    #[arg(long)]
    pub dataset: String,
    /// Folder of the data set (Fashion-MNIST is found automatically).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Augmentation preset giving the normalization and evaluation transform (imagenet, cifar,
    /// grayscale); default: the run's own for the same data set, else one fitting the data set.
    #[arg(long)]
    pub augment: Option<String>,
    /// Evaluation image size (0 = the preset's).
    #[arg(long, default_value_t = 0)]
    pub image_size: usize,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub train_limit: usize,
    /// Use only the first N test images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub test_limit: usize,
}

/// `byol eval …`
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Weighted cosine kNN on frozen features (train split = memory bank, test split = queries).
    Knn(KnnArgs),
    /// Linear classifier on frozen features (SGD probe or L-BFGS logistic regression).
    Linear(LinearArgs),
}

#[derive(Args, Debug, Clone)]
pub struct KnnArgs {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Neighbours.
    #[arg(long, default_value_t = 200)]
    pub k: usize,
    /// Temperature of the vote weight exp(sim/T).
    #[arg(long, default_value_t = 0.1)]
    pub temperature: f32,
    /// Folder for knn.json and knn-confusion.png.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LinearMethod {
    /// Mini-batch SGD, Nesterov momentum 0.9, cosine lr, lr picked on a held-out slice (App. C.1).
    Sgd,
    /// L2-regularised logistic regression with L-BFGS, λ picked on a held-out slice (App. D.2).
    Logreg,
}

#[derive(Args, Debug, Clone)]
pub struct LinearArgs {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value = "sgd")]
    pub method: LinearMethod,
    /// SGD epochs.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// SGD mini-batch size.
    #[arg(long, default_value_t = 256)]
    pub probe_batch: usize,
    /// SGD learning rates tried (comma-separated; one value skips the sweep).
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.03,0.1,0.3,1.0")]
    pub lr: Vec<f32>,
    /// Logistic-regression λ values tried (comma-separated; default 1e-6 … 1e2).
    #[arg(long, value_delimiter = ',')]
    pub lambda: Vec<f64>,
    /// Fraction of the training set held out to choose lr / λ.
    #[arg(long, default_value_t = 0.1)]
    pub holdout: f64,
    /// Standardise features with the training mean/std.
    #[arg(long)]
    pub standardize: bool,
    /// SGD only: train on features of a new random crop + flip of every training image each
    /// epoch (the paper's protocol; one encoder pass over the train split per epoch).
    #[arg(long)]
    pub crop_flip: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for linear.json / logreg.json and the confusion PNG.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Fraction of the training labels used (class-balanced), e.g. 0.01 or 0.1.
    #[arg(long, default_value_t = 0.1)]
    pub label_fraction: f64,
    /// Reuse a label subset file written by an earlier run (label-subset.json).
    #[arg(long, value_name = "FILE")]
    pub subset: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Peak learning rates tried (comma-separated, cosine decay to 0): each fine-tunes on the
    /// label subset minus the --holdout slice, the best held-out top-1 wins and is retrained on
    /// the whole subset (App. C.2 grid by default). One value skips the sweep. `--lr` is an alias.
    #[arg(long, visible_alias = "lr", value_delimiter = ',', default_value = crate::finetune_sweep::DEFAULT_LRS)]
    pub lrs: Vec<f64>,
    /// Fraction of the label subset held out (class-balanced, seeded) to choose the lr.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// Training mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub train_batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for finetune.json, the confusion PNG, label-subset.json and the weights.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Data set name (with --data), or use --folder.
    #[arg(long, conflicts_with = "folder")]
    pub dataset: Option<String>,
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// A folder of images (sub-folders = classes, or flat = unlabelled).
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Only the first N images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long)]
    pub augment: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub image_size: usize,
    /// Output: .npy (float32 [n, d]) or .safetensors (key "embeddings").
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Index file (CSV: row,index,file,label); default: OUTPUT with extension .index.csv.
    #[arg(long, value_name = "FILE")]
    pub index: Option<PathBuf>,
    /// Also write the preprocessed inputs as float32 .npy [n, C·H·W] (for parity checks).
    #[arg(long, value_name = "FILE")]
    pub dump_inputs: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportWhat {
    /// Online encoder, torchvision names without prefix (loads into torchvision's ResNet).
    Encoder,
    /// Whole online network, prefixed `online.`.
    Online,
    /// Target network, prefixed `target.`.
    Target,
    /// Online and target networks.
    All,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Run directory, checkpoint file or encoder .safetensors.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: PathBuf,
    #[arg(long, value_name = "SPEC")]
    pub arch: Option<String>,
    /// Output .safetensors file.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "encoder")]
    pub what: ExportWhat,
}

fn print_report(r: &crate::report::EvalReport, out: &std::path::Path, name: &str) {
    println!(
        "{}: top-1 {:.2}%  top-5 {:.2}%  ({} test images, {} classes)",
        r.method,
        r.top1 * 100.0,
        r.top5 * 100.0,
        r.num_samples,
        r.num_classes
    );
    println!(
        "report: {}  confusion matrix: {}",
        out.join(format!("{name}.json")).display(),
        out.join(format!("{name}-confusion.png")).display()
    );
}

/// `byol eval knn|linear`.
pub fn run_eval(c: EvalCommand) -> Result<()> {
    match c {
        EvalCommand::Knn(a) => {
            let r = crate::evaluate::run_knn(&a)?;
            print_report(&r, &a.out, "knn");
        }
        EvalCommand::Linear(a) => {
            let r = crate::evaluate::run_linear(&a)?;
            if let Some(lr) = r.params.get("best_lr") {
                println!("chosen lr: {lr}");
            }
            if let Some(l) = r.params.get("best_lambda") {
                println!("chosen λ: {l}");
            }
            print_report(&r, &a.out, &r.method);
        }
    }
    Ok(())
}

/// `byol finetune`.
pub fn run_finetune(a: &FinetuneArgs) -> Result<()> {
    let o = crate::finetune::run_finetune(a)?;
    for t in &o.sweep {
        match (t.holdout_top1, &t.failed) {
            (Some(acc), _) => println!("lr {}: held-out top-1 {:.2}%", t.lr, acc * 100.0),
            (None, why) => println!("lr {}: failed ({})", t.lr, why.as_deref().unwrap_or("unknown")),
        }
    }
    println!("chosen lr: {}", o.best_lr);
    println!("label subset: {} images ({})", o.subset.indices.len(), a.out.join("label-subset.json").display());
    if let (Some(f), Some(l)) = (o.epoch_losses.first(), o.epoch_losses.last()) {
        println!("training loss: {f:.4} (epoch 1) -> {l:.4} (epoch {})", o.epoch_losses.len());
    }
    print_report(&o.report, &a.out, "finetune");
    println!("fine-tuned weights: {}", a.out.join("finetuned.safetensors").display());
    Ok(())
}

/// `byol embed`.
pub fn run_embed(a: &EmbedArgs) -> Result<()> {
    let o = crate::embed::run_embed(a)?;
    println!("{} embeddings of dimension {} -> {}  (index: {})", o.rows, o.dim, o.output.display(), o.index.display());
    Ok(())
}

/// `byol export`.
pub fn run_export(a: &ExportArgs) -> Result<()> {
    let n = crate::export::run_export(a)?;
    println!("wrote {n} tensors ({:?}) to {}", a.what, a.output.display());
    Ok(())
}
