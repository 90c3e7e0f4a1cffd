//! `byol embed`: representations y (paper §3.3, the pooled encoder output used by every
//! downstream task) of a data set split or a folder of images, written as a float32 `.npy`
//! array or a `.safetensors` file (key `embeddings`), with an index file mapping each row to its
//! data set index, file name and label.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::augment::AugmentConfig;
use crate::cli_eval::EmbedArgs;
use crate::encoder_load::arch_string;
use crate::extract::Features;
use crate::image::Dataset;
use crate::loader::{EvalLoader, LoaderConfig};
use crate::params::{write_safetensors_with_metadata, HostTensors};

/// What `byol embed` wrote.
#[derive(Debug)]
pub struct EmbedOutcome {
    pub rows: usize,
    pub dim: usize,
    pub output: PathBuf,
    pub index: PathBuf,
}

/// Default index path: `OUTPUT` with its extension replaced by `index.csv`.
pub fn default_index_path(output: &Path) -> PathBuf {
    output.with_extension("index.csv")
}

/// Runs `byol embed`.
pub fn run_embed(a: &EmbedArgs) -> Result<EmbedOutcome> {
    let ext = a.output.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext != "npy" && ext != "safetensors" {
        bail!("--output {}: the file name must end in .npy or .safetensors", a.output.display());
    }
    let (model, params, device) = a.encoder.load()?;
    let (dataset, files, name): (Arc<dyn Dataset>, Option<Vec<PathBuf>>, String) = match (&a.folder, &a.dataset) {
        (Some(dir), _) => {
            let f = crate::datasets::ImageFolder::open(dir)?;
            let files = f.paths().iter().map(|p| p.strip_prefix(dir).unwrap_or(p).to_path_buf()).collect();
            let ds = crate::subset::Subset::first(Arc::new(f), a.limit)?;
            (ds, Some(files), "folder".to_string())
        }
        (None, Some(name)) => {
            (crate::eval_data::open_split(name, a.data.as_deref(), &a.split, a.limit)?, None, name.clone())
        }
        (None, None) => bail!("give --dataset NAME (with --data DIR) or --folder DIR"),
    };
    let aug = crate::eval_data::eval_augment(&name, a.augment.as_deref(), model.run_config.as_ref(), a.image_size)?;
    let bs = a.encoder.batch_size.max(1);
    let feats = crate::progress::extract_with_bar(&model.arch, &params, dataset.clone(), &aug, bs, &device, "embed")?;
    write_embeddings(&a.output, &feats, &arch_string(&model.arch))?;
    let index = a.index.clone().unwrap_or_else(|| default_index_path(&a.output));
    write_index(&index, &feats, files.as_deref())?;
    if let Some(path) = &a.dump_inputs {
        dump_inputs(path, dataset, &aug, bs)?;
    }
    Ok(EmbedOutcome { rows: feats.len(), dim: feats.dim, output: a.output.clone(), index })
}

/// Writes features as `.npy` or `.safetensors` (by extension).
pub fn write_embeddings(path: &Path, f: &Features, arch: &str) -> Result<()> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        crate::npy::write_npy_f32(path, &f.values, f.len(), f.dim)
    } else {
        let t: HostTensors = [("embeddings".to_string(), (vec![f.len(), f.dim], f.values.clone()))].into();
        let meta = HashMap::from([
            ("format".to_string(), "byol-embeddings-1".to_string()),
            ("arch".to_string(), arch.to_string()),
        ]);
        write_safetensors_with_metadata(path, &t, Some(meta))
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV index: `row,index,file,label` (file empty for data sets, label empty when unlabelled).
pub fn write_index(path: &Path, f: &Features, files: Option<&[PathBuf]>) -> Result<()> {
    let mut out = String::from("row,index,file,label\n");
    for (row, (&i, label)) in f.indices.iter().zip(&f.labels).enumerate() {
        let file = files.and_then(|fs| fs.get(i)).map(|p| csv_field(&p.to_string_lossy())).unwrap_or_default();
        let label = label.map(|l| l.to_string()).unwrap_or_default();
        out.push_str(&format!("{row},{i},{file},{label}\n"));
    }
    let mut w = std::fs::File::create(path).with_context(|| format!("cannot create index file {}", path.display()))?;
    w.write_all(out.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Writes the preprocessed network inputs (evaluation transform, normalised, NCHW flattened per
/// image) as `.npy` `[n, C·H·W]`, so that another framework can embed exactly the same tensors.
pub fn dump_inputs(path: &Path, dataset: Arc<dyn Dataset>, aug: &AugmentConfig, batch: usize) -> Result<()> {
    let loader = EvalLoader::new(
        dataset,
        aug.clone(),
        LoaderConfig { batch_size: batch, drop_last: false, shuffle: false, seed: 0, prefetch: 2, threads: 0 },
    )?;
    let (mut values, mut rows, mut cols) = (Vec::new(), 0usize, 0usize);
    for b in loader.iter_from(0)? {
        let b = b?;
        rows += b.shape[0];
        cols = b.shape[1] * b.shape[2] * b.shape[3];
        values.extend(b.images);
    }
    crate::npy::write_npy_f32(path, &values, rows, cols)
}
