use burn::tensor::{Device, Distribution, Tensor};
use byol::byol::{Byol, ByolConfig};
use byol::heads::MlpConfig;
use byol::resnet::{self, ResNetConfig, Stem};
use std::time::Instant;
fn main() {
    byol::malloc_tuning::keep_freed_memory();
    let width: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    let cfg = ByolConfig {
        encoder: ResNetConfig { depth: 18, width, stem: Stem::Cifar, in_channels: 3, zero_init_residual: false },
        projector: MlpConfig::new(4096, 256),
        predictor: MlpConfig::new(4096, 256),
    };
    let mut m = Byol::new(cfg.clone(), 0, &ad).unwrap();
    let x = Tensor::<4>::random([64, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    for _ in 0..3 {
        let t = Instant::now();
        let y = m.target_forward(x.clone());
        let _ = byol::params::to_vec(&y);
        let a = t.elapsed();
        let t = Instant::now();
        let y = resnet::forward(&cfg.encoder, &mut m.online, "encoder.", x.clone().autodiff(), true);
        let _ = byol::params::to_vec(&y.clone().inner());
        let b = t.elapsed();
        let t = Instant::now();
        let g = y.sum().backward();
        let _ = byol::grads::GradMap::collect(&m.online, &g);
        let c = t.elapsed();
        let mut ps = m.online.detached();
        let t = Instant::now();
        let y = resnet::forward(&cfg.encoder, &mut ps, "encoder.", x.clone(), false);
        let _ = byol::params::to_vec(&y);
        let d = t.elapsed();
        println!("target fwd {:?}  online fwd {:?}  backward {:?}  eval fwd {:?}", a, b, c, d);
    }
}
