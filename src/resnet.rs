//! ResNet v1 encoders (He et al. 2016, torchvision v1.5 layout) — BYOL's encoder f (paper §3.3).
//!
//! ResNet-18/34 use BasicBlock, ResNet-50/101/152/200 use Bottleneck with the stride on the 3×3
//! convolution. `width` is the channel count of the first stage (64 in torchvision; ×2/×3/×4 give
//! the paper's wide variants). The `cifar` stem is a 3×3 stride-1 convolution without max-pool
//! (solo-learn/lightly for 32 px images); the `imagenet` stem is 7×7 stride 2 plus a 3×3 stride-2
//! max-pool. The output is the global-average-pooled representation y.

use anyhow::{bail, Result};
use burn::tensor::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::conv::ConvGeom;
use crate::layers::{add_bn, add_conv, bn, bn_relu, conv};
use crate::params::ParamSet;
use crate::residual_op::add_relu;

/// Residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Block {
    BasicBlock,
    Bottleneck,
}

impl Block {
    /// Output channels per stage channel (1 for BasicBlock, 4 for Bottleneck).
    pub fn expansion(self) -> usize {
        match self {
            Block::BasicBlock => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// First layers of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// 3×3 stride-1 convolution, no max-pool (32 px images).
    Cifar,
    /// 7×7 stride-2 convolution (padding 3) and 3×3 stride-2 max-pool (padding 1).
    Imagenet,
}

/// Architecture of a ResNet trunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// 18, 34, 50, 101, 152 or 200.
    pub depth: usize,
    /// Channels of the first stage (64 = torchvision).
    pub width: usize,
    pub stem: Stem,
    /// Input channels (3 for RGB, 1 for grayscale data).
    pub in_channels: usize,
    /// Zero-initialise the last BN γ of each residual block (Goyal et al.; JAX BYOL does this).
    pub zero_init_residual: bool,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self { depth: 18, width: 64, stem: Stem::Cifar, in_channels: 3, zero_init_residual: false }
    }
}

impl ResNetConfig {
    /// Block type and blocks per stage for the configured depth.
    pub fn layout(&self) -> Result<(Block, [usize; 4])> {
        Ok(match self.depth {
            18 => (Block::BasicBlock, [2, 2, 2, 2]),
            34 => (Block::BasicBlock, [3, 4, 6, 3]),
            50 => (Block::Bottleneck, [3, 4, 6, 3]),
            101 => (Block::Bottleneck, [3, 4, 23, 3]),
            152 => (Block::Bottleneck, [3, 8, 36, 3]),
            200 => (Block::Bottleneck, [3, 24, 36, 3]),
            d => bail!("resnet depth {d} is not supported; valid depths: 18, 34, 50, 101, 152, 200"),
        })
    }

    /// Checks every field, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        self.layout()?;
        if self.width == 0 {
            bail!("encoder width must be positive (64 = torchvision)");
        }
        if self.in_channels == 0 {
            bail!("encoder in_channels must be positive (3 for RGB, 1 for grayscale)");
        }
        Ok(())
    }

    /// Multiply-adds of one first-stage 3×3 convolution (`width` → `width` channels) over a
    /// batch of `n` images of `h × w` pixels: every stage of a ResNet has about this many per
    /// convolution, so it sizes the step's convolutions.
    pub fn stage_conv_macs(&self, n: usize, h: usize, w: usize) -> usize {
        let s = match self.stem {
            Stem::Cifar => 1,
            Stem::Imagenet => 4,
        };
        let (c, maps) = (self.width, [h.div_ceil(s), w.div_ceil(s)]);
        ConvGeom::new([n, c, maps[0], maps[1]], [c, c, 3, 3], 1, 1).map_or(0, |g| g.macs())
    }

    /// Dimension of the representation y.
    pub fn out_dim(&self) -> usize {
        let block = self.layout().map(|l| l.0).unwrap_or(Block::BasicBlock);
        self.width * 8 * block.expansion()
    }
}

/// Creates the parameters of a ResNet trunk with torchvision names and initialisation.
pub fn init(cfg: &ResNetConfig, rng: &mut ChaCha8Rng, device: &Device) -> Result<ParamSet> {
    cfg.validate()?;
    let (block, layers) = cfg.layout()?;
    let mut ps = ParamSet::new();
    let k = match cfg.stem {
        Stem::Cifar => 3,
        Stem::Imagenet => 7,
    };
    add_conv(&mut ps, "conv1", cfg.width, cfg.in_channels, k, rng, device);
    add_bn(&mut ps, "bn1", cfg.width, false, device);
    let mut inplanes = cfg.width;
    for (stage, &blocks) in layers.iter().enumerate() {
        let planes = cfg.width << stage;
        for b in 0..blocks {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let name = format!("layer{}.{b}", stage + 1);
            let out = planes * block.expansion();
            let z = cfg.zero_init_residual;
            match block {
                Block::BasicBlock => {
                    add_conv(&mut ps, &format!("{name}.conv1"), planes, inplanes, 3, rng, device);
                    add_bn(&mut ps, &format!("{name}.bn1"), planes, false, device);
                    add_conv(&mut ps, &format!("{name}.conv2"), planes, planes, 3, rng, device);
                    add_bn(&mut ps, &format!("{name}.bn2"), planes, z, device);
                }
                Block::Bottleneck => {
                    add_conv(&mut ps, &format!("{name}.conv1"), planes, inplanes, 1, rng, device);
                    add_bn(&mut ps, &format!("{name}.bn1"), planes, false, device);
                    add_conv(&mut ps, &format!("{name}.conv2"), planes, planes, 3, rng, device);
                    add_bn(&mut ps, &format!("{name}.bn2"), planes, false, device);
                    add_conv(&mut ps, &format!("{name}.conv3"), out, planes, 1, rng, device);
                    add_bn(&mut ps, &format!("{name}.bn3"), out, z, device);
                }
            }
            if stride != 1 || inplanes != out {
                add_conv(&mut ps, &format!("{name}.downsample.0"), out, inplanes, 1, rng, device);
                add_bn(&mut ps, &format!("{name}.downsample.1"), out, false, device);
            }
            inplanes = out;
        }
    }
    Ok(ps)
}

/// Forward pass: `x` `[N, C, H, W]` → pooled features `[N, out_dim]`. Parameters are looked up
/// under `prefix` (e.g. `"encoder."`). `train` selects batch statistics (and running-statistics
/// updates) or running statistics for every BatchNorm.
pub fn forward(cfg: &ResNetConfig, ps: &mut ParamSet, prefix: &str, x: Tensor<4>, train: bool) -> Tensor<2> {
    let (block, layers) = cfg.layout().unwrap_or((Block::BasicBlock, [2, 2, 2, 2]));
    let p = |s: &str| format!("{prefix}{s}");
    let mut x = match cfg.stem {
        Stem::Cifar => conv(ps, &p("conv1"), x, 1, 1),
        Stem::Imagenet => conv(ps, &p("conv1"), x, 2, 3),
    };
    x = bn_relu(ps, &p("bn1"), x, train);
    if cfg.stem == Stem::Imagenet {
        x = crate::pool_op::max_pool2d(x, 3, 2, 1);
    }
    for (stage, &blocks) in layers.iter().enumerate() {
        for b in 0..blocks {
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let name = p(&format!("layer{}.{b}", stage + 1));
            let identity = if ps.contains(&format!("{name}.downsample.0.weight")) {
                let d = conv(ps, &format!("{name}.downsample.0"), x.clone(), stride, 0);
                bn(ps, &format!("{name}.downsample.1"), d, train)
            } else {
                x.clone()
            };
            let y = match block {
                Block::BasicBlock => {
                    let y = conv(ps, &format!("{name}.conv1"), x, stride, 1);
                    let y = bn_relu(ps, &format!("{name}.bn1"), y, train);
                    let y = conv(ps, &format!("{name}.conv2"), y, 1, 1);
                    bn(ps, &format!("{name}.bn2"), y, train)
                }
                Block::Bottleneck => {
                    let y = conv(ps, &format!("{name}.conv1"), x, 1, 0);
                    let y = bn_relu(ps, &format!("{name}.bn1"), y, train);
                    let y = conv(ps, &format!("{name}.conv2"), y, stride, 1);
                    let y = bn_relu(ps, &format!("{name}.bn2"), y, train);
                    let y = conv(ps, &format!("{name}.conv3"), y, 1, 0);
                    bn(ps, &format!("{name}.bn3"), y, train)
                }
            };
            x = add_relu(y, identity);
        }
    }
    let [n, c, _, _] = x.dims();
    x.mean_dims(&[2, 3]).reshape([n, c])
}
