//! Shared helpers of the parity tests: where the PyTorch reference fixtures are, which files
//! are of which kind, and the relative-error measure their README defines.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The fixture folder: `$BYOL_FIXTURES`, or the copy in tests/fixtures.
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("BYOL_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// Every fixture of `kind` in the fixture folder: (name, JSON sidecar, tensors). Panics if there
/// is none, so a wrong folder cannot make the parity tests pass vacuously.
pub fn fixtures(kind: &str) -> Vec<(String, serde_json::Value, Tensors)> {
    let dir = fixture_dir();
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fixture folder {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for json_path in entries {
        let text = std::fs::read_to_string(&json_path).expect("read fixture json");
        let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        if meta["kind"] != kind {
            continue;
        }
        let st = json_path.with_extension("safetensors");
        let tensors = byol::params::read_safetensors(&st).unwrap_or_else(|e| panic!("{e:#}"));
        let name = json_path.file_stem().unwrap().to_string_lossy().to_string();
        out.push((name, meta, tensors));
    }
    assert!(!out.is_empty(), "no fixture of kind {kind} in {}", dir.display());
    out
}

/// max |a − b| / (max |b| + 1e-6), the fixtures' error measure.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let max_b = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let max_d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    max_d / (max_b + 1e-6)
}

/// Tensors whose names start with `prefix`, prefix removed.
pub fn with_prefix(t: &Tensors, prefix: &str) -> Tensors {
    t.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone()))).collect()
}

pub const FWD_TOL: f32 = 1e-4;
pub const GRAD_TOL: f32 = 1e-3;
