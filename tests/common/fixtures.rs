//! Fixture helpers shared by parity tests: locate fixture files of a given `kind` and read
//! safetensors files into name → (shape, f32 values).
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A float32 tensor read from a fixture: shape and row-major values.
pub type Tensor = (Vec<usize>, Vec<f32>);

/// The fixture folder: `$BYOL_FIXTURES` if set, else `tests/fixtures` of this crate.
pub fn fixture_dir() -> PathBuf {
    std::env::var_os("BYOL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// Every `(json sidecar, safetensors path)` in `dir` whose JSON has `"kind": kind`, sorted.
pub fn fixtures_of_kind(dir: &Path, kind: &str) -> Result<Vec<(serde_json::Value, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading fixture folder {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        if json.get("kind").and_then(|k| k.as_str()) == Some(kind) {
            let st = p.with_extension("safetensors");
            if !st.exists() {
                bail!("{} has no companion {}", p.display(), st.display());
            }
            out.push((json, st));
        }
    }
    Ok(out)
}

/// Reads every float32 tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!("{}: tensor {name} is {:?}, expected F32", path.display(), view.dtype());
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// `max |a − b| / (max |b| + 1e-6)`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let den = b.iter().map(|y| y.abs()).fold(0.0f32, f32::max);
    num / (den + 1e-6)
}
