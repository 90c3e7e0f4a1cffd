//! `byol bench`: time of the full BYOL training step (both views through online and target,
//! backward, LARS, EMA) on random inputs — medians over repeated steps after warm-up.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::{Distribution, Tensor};

use crate::byol::{Byol, ByolConfig};
use crate::heads::MlpConfig;
use crate::lars::Lars;
use crate::resnet::{ResNetConfig, Stem};

/// One benchmark case.
#[derive(Clone, Debug)]
pub struct BenchCase {
    pub depth: usize,
    pub width: usize,
    pub stem: Stem,
    pub in_channels: usize,
    pub image_size: usize,
    pub batch: usize,
    pub proj_hidden: usize,
    pub proj_out: usize,
}

/// Result of one case.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub median_ms: f64,
    /// The fastest timed step (the least disturbed reading on a busy machine).
    pub fastest_ms: f64,
    /// Floating-point operations of one step (2 per multiply-add), counted from the geometry
    /// (the same on every backend and kernel, and what PyTorch would do): every convolution pass
    /// (forward; weight and input gradients where autodiff computes them, see
    /// `conv_op::nominal_macs`) plus the projector/predictor matrix products (forward + 2×
    /// backward for the online heads, forward for the target projector). BatchNorm, ReLU and the
    /// rest are left out.
    pub flops: f64,
    pub images_per_s: f64,
    pub times_ms: Vec<f64>,
}

/// Runs `warmup + steps` BYOL steps on `device` and returns the median step time.
pub fn bench_step(case: &BenchCase, device_name: &str, warmup: usize, steps: usize) -> Result<BenchResult> {
    let device = crate::backend::device(device_name)?;
    let ad = device.clone().autodiff();
    let cfg = ByolConfig {
        encoder: ResNetConfig {
            depth: case.depth,
            width: case.width,
            stem: case.stem,
            in_channels: case.in_channels,
            zero_init_residual: false,
        },
        projector: MlpConfig::new(case.proj_hidden, case.proj_out),
        predictor: MlpConfig::new(case.proj_hidden, case.proj_out),
    };
    let mut model = Byol::new(cfg, 0, &ad)?;
    let mut opt = Lars::new(0.9, 1.5e-6, 1e-3);
    let shape = [case.batch, case.in_channels, case.image_size, case.image_size];
    let mut times = Vec::new();
    let mut conv_macs = 0usize;
    for i in 0..warmup + steps {
        let v1 = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let v2 = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let _ = device.sync();
        let t = Instant::now();
        let macs0 = crate::conv_op::nominal_macs();
        let out = model.forward_backward(v1, v2);
        conv_macs = crate::conv_op::nominal_macs() - macs0;
        model.apply(&out.grads, &mut opt, 0.1, 0.99);
        let _ = crate::params::to_vec(&model.target.param("encoder.conv1.weight").value);
        let _ = device.sync();
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let (median_ms, fastest_ms) = (sorted[sorted.len() / 2], sorted[0]);
    let (d, h, o) = (model.cfg.encoder.out_dim(), case.proj_hidden, case.proj_out);
    let head_macs_per_view = case.batch * (3 * (d * h + h * o + o * h + h * o) + (d * h + h * o));
    let flops = 2.0 * (conv_macs + 2 * head_macs_per_view) as f64;
    Ok(BenchResult {
        median_ms,
        fastest_ms,
        flops,
        images_per_s: case.batch as f64 / (median_ms / 1e3),
        times_ms: times,
    })
}
