//! Schedules (τ, warmup + cosine lr) and the LARS exclusion list of every ResNet depth.

use burn::tensor::Device;
use byol::byol::{Byol, ByolConfig};
use byol::heads::MlpConfig;
use byol::lars::Lars;
use byol::params::Kind;
use byol::resnet::{ResNetConfig, Stem};
use byol::schedule::{scaled_lr, tau, WarmupCosine};

#[test]
fn tau_goes_from_base_to_one() {
    assert_eq!(tau(0.996, 0, 1000), 0.996);
    assert!((tau(0.996, 1000, 1000) - 1.0).abs() < 1e-15);
    // Half way: 1 − (1 − τ_base)/2.
    assert!((tau(0.996, 500, 1000) - 0.998).abs() < 1e-12);
    // Quarter: 1 − 0.004·(cos(π/4) + 1)/2.
    let want = 1.0 - 0.004 * ((std::f64::consts::PI / 4.0).cos() + 1.0) / 2.0;
    assert!((tau(0.996, 250, 1000) - want).abs() < 1e-12);
    // Monotone.
    let mut last = 0.0;
    for k in 0..=100 {
        let t = tau(0.99, k, 100);
        assert!(t >= last);
        last = t;
    }
}

#[test]
fn warmup_then_cosine() {
    assert_eq!(scaled_lr(0.2, 4096), 3.2);
    assert_eq!(scaled_lr(0.2, 256), 0.2);
    let s = WarmupCosine { peak: 1.0, warmup_steps: 10, total_steps: 110 };
    assert!((s.at(0) - 0.1).abs() < 1e-12);
    assert!((s.at(4) - 0.5).abs() < 1e-12);
    assert!((s.at(9) - 1.0).abs() < 1e-12);
    assert!((s.at(10) - 1.0).abs() < 1e-12);
    assert!((s.at(60) - 0.5).abs() < 1e-12);
    let want = 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos());
    assert!((s.at(35) - want).abs() < 1e-12);
    assert!(s.at(110).abs() < 1e-12);
    assert!(s.at(500).abs() < 1e-12);
}

#[test]
fn lars_excludes_biases_and_all_batchnorm_parameters_for_every_depth() {
    for depth in [18, 34, 50, 101, 152, 200] {
        let cfg = ByolConfig {
            encoder: ResNetConfig { depth, width: 2, stem: Stem::Imagenet, in_channels: 3, zero_init_residual: false },
            projector: MlpConfig::new(8, 4),
            predictor: MlpConfig::new(8, 4),
        };
        let model = Byol::new(cfg, 1, &Device::flex()).unwrap();
        let excluded = Lars::excluded(&model.online);
        let is_bn = |n: &str| {
            let layer = n.rsplit_once('.').unwrap().0;
            let last = layer.rsplit('.').next().unwrap();
            last.starts_with("bn") || layer.ends_with("downsample.1") || layer.ends_with("net.1")
        };
        for p in model.online.iter() {
            let should = p.kind != Kind::Buffer && (p.name.ends_with(".bias") || is_bn(&p.name));
            assert_eq!(excluded.contains(&p.name), should, "depth {depth}: {}", p.name);
        }
        // Every BN layer and the heads' biases appear; conv/linear weights never do.
        let (block_bns, convs) = match depth {
            18 => (8 * 2 + 3, 8 * 2 + 3),
            34 => (16 * 2 + 3, 16 * 2 + 3),
            50 => (16 * 3 + 4, 16 * 3 + 4),
            101 => (33 * 3 + 4, 33 * 3 + 4),
            152 => (50 * 3 + 4, 50 * 3 + 4),
            _ => (66 * 3 + 4, 66 * 3 + 4),
        };
        let n_bn = model.online.iter().filter(|p| p.kind == Kind::BnWeight && p.name.starts_with("encoder.")).count();
        assert_eq!(n_bn, block_bns + 1, "depth {depth}: BN layers (stem + blocks + downsamples)");
        let n_conv = model.online.iter().filter(|p| p.kind == Kind::Weight && p.name.starts_with("encoder.")).count();
        assert_eq!(n_conv, convs + 1, "depth {depth}: conv layers");
        assert!(excluded.contains(&"projector.net.1.weight".to_string()));
        assert!(excluded.contains(&"predictor.net.0.bias".to_string()));
        assert!(!excluded.contains(&"predictor.net.0.weight".to_string()));
    }
}
