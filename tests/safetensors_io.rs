//! Save/load of every module with torchvision names: lossless round trip, clear errors.

use burn::tensor::Device;
use byol::byol::{Byol, ByolConfig};
use byol::heads::MlpConfig;
use byol::resnet::{ResNetConfig, Stem};

fn small(depth: usize, seed: u64) -> Byol {
    let cfg = ByolConfig {
        encoder: ResNetConfig { depth, width: 4, stem: Stem::Cifar, in_channels: 1, zero_init_residual: true },
        projector: MlpConfig::new(16, 8),
        predictor: MlpConfig { hidden: 16, out: 8, last_bias: false },
    };
    Byol::new(cfg, seed, &Device::flex()).unwrap()
}

#[test]
fn every_module_round_trips_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    for depth in [18, 50] {
        let a = small(depth, 1);
        let mut b = small(depth, 2);
        for module in ["encoder.", "projector.", "predictor."] {
            let path = dir.path().join(format!("{depth}-{module}safetensors"));
            let src = a.online.sub(module);
            src.save_safetensors(&path, "").unwrap();
            let mut dst = b.online.sub(module);
            assert_ne!(dst.to_host(), src.to_host(), "different seeds must give different weights");
            dst.load_safetensors(&path, "").unwrap();
            assert_eq!(dst.to_host(), src.to_host(), "{depth} {module}: round trip not exact");
        }
        // Whole online state under a prefix, e.g. for export.
        let path = dir.path().join("online.safetensors");
        a.online.save_safetensors(&path, "online.").unwrap();
        b.online.load_safetensors(&path, "online.").unwrap();
        assert_eq!(a.online.to_host(), b.online.to_host());
    }
}

#[test]
fn torchvision_names_are_used() {
    let m = small(50, 0);
    for name in [
        "encoder.conv1.weight",
        "encoder.bn1.running_var",
        "encoder.layer1.0.downsample.0.weight",
        "encoder.layer1.0.downsample.1.bias",
        "encoder.layer4.2.conv3.weight",
        "encoder.layer4.2.bn3.weight",
        "projector.net.0.weight",
        "projector.net.1.running_mean",
        "projector.net.3.bias",
        "predictor.net.3.weight",
    ] {
        assert!(m.online.contains(name), "missing {name}");
    }
    assert!(!m.online.contains("predictor.net.3.bias"), "last_bias = false");
    assert_eq!(m.online.param("encoder.conv1.weight").shape, vec![4, 1, 3, 3]);
    // zero_init_residual: last BN γ of each block is 0, the others 1.
    assert!(m.online.values("encoder.layer2.1.bn3.weight").iter().all(|&v| v == 0.0));
    assert!(m.online.values("encoder.layer2.1.bn2.weight").iter().all(|&v| v == 1.0));
}

#[test]
fn loading_reports_missing_extra_and_misshaped_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let a = small(18, 1);
    let path = dir.path().join("enc.safetensors");
    a.online.sub("encoder.").save_safetensors(&path, "").unwrap();
    // A ResNet-50 cannot load ResNet-18 weights: the error names the file and tensors.
    let mut b = small(50, 1).online.sub("encoder.");
    let err = format!("{:#}", b.load_safetensors(&path, "").unwrap_err());
    assert!(err.contains("enc.safetensors"), "{err}");
    assert!(err.contains("missing") || err.contains("shape"), "{err}");
    // Not a safetensors file.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let err = format!("{:#}", b.load_safetensors(&bad, "").unwrap_err());
    assert!(err.contains("bad.safetensors"), "{err}");
    // Missing file.
    let err = format!("{:#}", b.load_safetensors(&dir.path().join("nope.safetensors"), "").unwrap_err());
    assert!(err.contains("nope.safetensors"), "{err}");
}
