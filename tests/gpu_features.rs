//! The GPU cargo features must turn on burn's kernel autotuning and operation fusion.
//!
//! burn enables both through its default features, which this crate switches off
//! (`default-features = false`); without `autotune`, burn-cubecl runs its naive direct
//! convolution kernels (the seventh session measured the Vulkan build 64× slower than PyTorch on
//! an NVIDIA H200). GPU builds cannot run on the CI machine, so this guards the manifest itself.

use std::path::Path;

fn feature(manifest: &toml::Table, name: &str) -> Vec<String> {
    let features = manifest["features"].as_table().expect("[features] table");
    let list = features.get(name).unwrap_or_else(|| panic!("feature {name:?} missing from Cargo.toml"));
    list.as_array().expect("feature list").iter().map(|v| v.as_str().expect("feature entry").to_string()).collect()
}

#[test]
fn gpu_features_enable_autotune_and_fusion() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).expect("read Cargo.toml");
    let manifest: toml::Table = text.parse().expect("parse Cargo.toml");
    for (name, backend) in [("vulkan", "burn/vulkan"), ("cuda", "burn/cuda")] {
        let entries = feature(&manifest, name);
        for needed in [backend, "burn/autotune", "burn/fusion"] {
            assert!(entries.iter().any(|e| e == needed), "feature {name:?} = {entries:?} lacks {needed:?}");
        }
    }
    // The default (CPU) build keeps burn's GPU machinery out.
    let default = feature(&manifest, "default");
    assert_eq!(default, ["flex"], "default features");
}
