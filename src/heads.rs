//! Projector g and predictor q (paper §3.3): Linear → BatchNorm1d → ReLU → Linear, with the
//! PyTorch `nn.Sequential` names `net.0`, `net.1`, `net.3` used by lightly and solo-learn.
//! Paper sizes: projector d → 4096 → 256, predictor 256 → 4096 → 256.

use burn::tensor::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::layers::{add_bn, add_linear, bn_relu, linear};
use crate::params::ParamSet;

/// Sizes of one MLP head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    pub hidden: usize,
    pub out: usize,
    /// Bias on the last linear layer (PyTorch peers: yes; JAX BYOL: no).
    #[serde(default = "default_true")]
    pub last_bias: bool,
}

fn default_true() -> bool {
    true
}

impl MlpConfig {
    pub fn new(hidden: usize, out: usize) -> Self {
        Self { hidden, out, last_bias: true }
    }
}

/// Creates the parameters of an MLP head taking `in_dim` inputs.
pub fn init(in_dim: usize, cfg: &MlpConfig, rng: &mut ChaCha8Rng, device: &Device) -> ParamSet {
    let mut ps = ParamSet::new();
    add_linear(&mut ps, "net.0", in_dim, cfg.hidden, true, rng, device);
    add_bn(&mut ps, "net.1", cfg.hidden, false, device);
    add_linear(&mut ps, "net.3", cfg.hidden, cfg.out, cfg.last_bias, rng, device);
    ps
}

/// Forward pass `[N, in] → [N, out]`, parameters under `prefix` (e.g. `"projector."`).
pub fn forward(ps: &mut ParamSet, prefix: &str, x: Tensor<2>, train: bool) -> Tensor<2> {
    let h = linear(ps, &format!("{prefix}net.0"), x);
    let h = bn_relu(ps, &format!("{prefix}net.1"), h, train);
    linear(ps, &format!("{prefix}net.3"), h)
}
