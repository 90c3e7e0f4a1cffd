//! The layers BYOL's networks are made of — convolution, BatchNorm, linear — as functions over a
//! [`ParamSet`], with PyTorch's initialisations and BatchNorm semantics.
//!
//! BatchNorm follows PyTorch exactly: in training mode it normalises with the batch statistics
//! (biased variance) and updates the running estimates with momentum 0.1 using the **unbiased**
//! batch variance; in evaluation mode it uses the running estimates. Unlike burn's `BatchNorm`
//! module, the mode is explicit, so the BYOL target (paper §3.1: target BN in training mode) runs
//! batch statistics even though it lives on the non-autodiff backend.

use burn::tensor::activation::relu;
use burn::tensor::module::batch_norm;
use burn::tensor::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::params::{Kind, ParamSet};

/// BatchNorm epsilon (PyTorch default).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm running-statistics momentum (PyTorch convention: new = (1−m)·old + m·batch).
pub const BN_MOMENTUM: f32 = 0.1;

/// Standard normal sample (Box–Muller), so initialisation depends only on the seeded RNG.
pub fn randn(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Adds a bias-free conv weight `[out, in, k, k]`, Kaiming-normal with fan-out and ReLU gain
/// (torchvision's ResNet initialisation).
pub fn add_conv(
    ps: &mut ParamSet,
    name: &str,
    out_c: usize,
    in_c: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
) {
    let std = (2.0 / (out_c * k * k) as f32).sqrt();
    let values = (0..out_c * in_c * k * k).map(|_| randn(rng) * std).collect();
    ps.push(format!("{name}.weight"), vec![out_c, in_c, k, k], Kind::Weight, values, device);
}

/// Adds a BatchNorm layer: γ (1, or 0 when `zero_gamma`), β = 0, running mean 0 / var 1.
pub fn add_bn(ps: &mut ParamSet, name: &str, c: usize, zero_gamma: bool, device: &Device) {
    let gamma = if zero_gamma { 0.0 } else { 1.0 };
    ps.push(format!("{name}.weight"), vec![c], Kind::BnWeight, vec![gamma; c], device);
    ps.push(format!("{name}.bias"), vec![c], Kind::BnBias, vec![0.0; c], device);
    ps.push(format!("{name}.running_mean"), vec![c], Kind::Buffer, vec![0.0; c], device);
    ps.push(format!("{name}.running_var"), vec![c], Kind::Buffer, vec![1.0; c], device);
}

/// Adds a linear layer with PyTorch's default initialisation: weight `[out, in]` and bias
/// uniform in ±1/√in.
pub fn add_linear(
    ps: &mut ParamSet,
    name: &str,
    in_f: usize,
    out_f: usize,
    bias: bool,
    rng: &mut ChaCha8Rng,
    device: &Device,
) {
    let bound = 1.0 / (in_f as f32).sqrt();
    let w = (0..out_f * in_f).map(|_| rng.gen_range(-bound..bound)).collect();
    ps.push(format!("{name}.weight"), vec![out_f, in_f], Kind::Weight, w, device);
    if bias {
        let b = (0..out_f).map(|_| rng.gen_range(-bound..bound)).collect();
        ps.push(format!("{name}.bias"), vec![out_f], Kind::Bias, b, device);
    }
}

/// Bias-free 2-D convolution with symmetric padding.
pub fn conv(ps: &ParamSet, name: &str, x: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    let w = ps.tensor::<4>(&format!("{name}.weight"));
    crate::conv_op::conv2d(x, w, stride, padding)
}

/// Linear layer `x·Wᵀ + b` with the PyTorch weight layout `[out, in]`.
pub fn linear(ps: &ParamSet, name: &str, x: Tensor<2>) -> Tensor<2> {
    let w = ps.tensor::<2>(&format!("{name}.weight"));
    let y = crate::linear_op::linear(x, w);
    let bias = format!("{name}.bias");
    if ps.contains(&bias) {
        y + ps.tensor::<1>(&bias).unsqueeze::<2>()
    } else {
        y
    }
}

/// BatchNorm over dimension 1 of a rank-D input (D = 2 for BatchNorm1d, 4 for BatchNorm2d).
/// `train = true`: batch statistics, and the running estimates in `ps` are updated.
pub fn bn<const D: usize>(ps: &mut ParamSet, name: &str, x: Tensor<D>, train: bool) -> Tensor<D> {
    bn_maybe_relu(ps, name, x, train, false)
}

/// `relu(bn(x))`, fused into one operation on the CPU in training mode ([`crate::bn_op`]).
pub fn bn_relu<const D: usize>(ps: &mut ParamSet, name: &str, x: Tensor<D>, train: bool) -> Tensor<D> {
    bn_maybe_relu(ps, name, x, train, true)
}

fn bn_maybe_relu<const D: usize>(ps: &mut ParamSet, name: &str, x: Tensor<D>, train: bool, act: bool) -> Tensor<D> {
    let gamma = ps.tensor::<1>(&format!("{name}.weight"));
    let beta = ps.tensor::<1>(&format!("{name}.bias"));
    let (rm_name, rv_name) = (format!("{name}.running_mean"), format!("{name}.running_var"));
    if train {
        let dims = x.dims();
        let n: usize = dims.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, d)| *d).product();
        // Data-parallel: statistics over the global batch (cross-replica BatchNorm).
        let (output, mean, variance, n) = match crate::distributed::bn_group() {
            Some(group) => {
                let o = crate::sync_bn::batch_norm_train(x, gamma, beta, BN_EPS, group);
                let y = if act { relu(o.output) } else { o.output };
                (y, o.mean, o.variance, o.count)
            }
            None => {
                let (y, mean, variance) = crate::bn_op::batch_norm_train(x, gamma, beta, BN_EPS, act);
                (y, mean, variance, n)
            }
        };
        let unbias = if n > 1 { n as f32 / (n as f32 - 1.0) } else { 1.0 };
        let rm = ps.param(&rm_name).value.clone();
        let rv = ps.param(&rv_name).value.clone();
        let new_rm = rm * (1.0 - BN_MOMENTUM) + mean * BN_MOMENTUM;
        let new_rv = rv * (1.0 - BN_MOMENTUM) + variance * (BN_MOMENTUM * unbias);
        ps.set(&rm_name, new_rm);
        ps.set(&rv_name, new_rv);
        output
    } else {
        let mut rm = ps.param(&rm_name).value.clone();
        let mut rv = ps.param(&rv_name).value.clone();
        if x.is_autodiff() {
            rm = rm.autodiff();
            rv = rv.autodiff();
        }
        let y = batch_norm(x, gamma, beta, rm, rv, BN_EPS);
        if act {
            relu(y)
        } else {
            y
        }
    }
}
