//! Training-mode BatchNorm (Ioffe & Szegedy 2015, Alg. 1), optionally followed by ReLU, as one
//! fused CPU operation with a hand-written backward pass: a burn backend extension (a `Flex`
//! kernel plus an `Autodiff` node), like the convolution of [`crate::conv_op`].
//!
//! burn 0.22.1 composes `batch_norm_train` from generic tensor operations (reshapes, permuted
//! copies, reductions, broadcasts) and differentiates each of them; on the `fashion-mnist`
//! step that was a fifth of the time. Here the forward pass is two reads (statistics) and one
//! write, the backward pass two reads and one write, and ReLU is folded in (its mask is read from
//! the stored output). GPU backends and float64 keep burn's composition: [`batch_norm_train`]
//! routes by device.
//!
//! Determinism: each channel's sums run in one fixed order on one thread, whatever the thread
//! count, so training stays bit-reproducible.

use std::mem::MaybeUninit;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, AutodiffBackend, Dispatch, Flex, TensorMetadata};
use burn::tensor::activation::relu as burn_relu;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::cpu_ops::{filled, min_items, on_flex_f32, values, TASK_ELEMENTS};

/// Fused training-mode BatchNorm over dimension 1 (+ ReLU) and its gradients.
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormBackend: burn::backend::Backend {
    /// `y = γ·(x − μ)/√(σ² + ε) + β` with the batch's per-channel mean μ and biased variance σ²
    /// (then `max(y, 0)` when `relu`); returns (y, μ, σ²).
    fn byol_bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// Gradients (dx, dγ, dβ) of [`BatchNormBackend::byol_bn_train`] for the output gradient
    /// `dy`, given its input, γ, statistics and output; called by the autodiff node on the inner
    /// backend (the autodiff backend itself does not support second-order gradients).
    #[allow(clippy::too_many_arguments)]
    fn byol_bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (x, gamma, mean, var, y, dy, eps, relu);
        unimplemented!("second-order gradients of BatchNorm are not supported")
    }
}

fn values_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    values(t, "BatchNorm")
}

/// `[n, c, s]`: batch, channels, and positions per channel (product of the dimensions after 1).
fn layout(t: &FlexTensor) -> [usize; 3] {
    let s = t.shape();
    assert!(s.num_dims() >= 2, "BatchNorm: expected rank ≥ 2, got shape {s:?}");
    let rest: usize = (2..s.num_dims()).map(|i| s[i]).product();
    [s[0], s[1], rest]
}

fn vector(v: Vec<f32>) -> FlexTensor {
    let n = v.len();
    FlexTensor::from_data(TensorData::new(v, [n]))
}

/// Σ f(a[k], b[k]) over two rows of equal length in float64: short rows in order, longer ones
/// over 8 interleaved lanes (a fixed order), then the lanes in order. Walks the rows in chunks of
/// 8, so there are no bounds checks and the compiler vectorises the lanes. (Also LARS's norms,
/// [`crate::update_op`].)
pub(crate) fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    if a.len() < 16 {
        return a.iter().zip(b).map(|(x, y)| f(*x, *y)).sum();
    }
    let mut lanes = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for j in 0..8 {
            lanes[j] += f(xa[j], xb[j]);
        }
    }
    for (l, (x, y)) in lanes.iter_mut().zip(ra.iter().zip(rb)) {
        *l += f(*x, *y);
    }
    lanes.iter().sum()
}

/// Per-channel `(Σ, Σ)` of the row sums `f(sample, channel)` over `[n, c, s]` data, one channel
/// per task, rows added in order.
fn channel_sums<F>(dims: [usize; 3], f: F) -> Vec<(f64, f64)>
where
    F: Fn(usize, usize) -> (f64, f64) + Sync,
{
    let [n, c, s] = dims;
    (0..c)
        .into_par_iter()
        .with_min_len(min_items(n * s))
        .map(|ch| {
            let (mut a, mut b) = (0f64, 0f64);
            for i in 0..n {
                let (ra, rb) = f(i, ch);
                a += ra;
                b += rb;
            }
            (a, b)
        })
        .collect()
}

/// The `[n, c, s]` values whose row `(i, ch)` `f(i, ch, row)` writes in full (every element;
/// rows in parallel, the memory not zeroed first).
fn per_row_write<F>(dims: [usize; 3], f: F) -> Vec<f32>
where
    F: Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync,
{
    let [n, c, s] = dims;
    let fill = |out: &mut [MaybeUninit<f32>]| {
        if c * s == 0 {
            return;
        }
        out.par_chunks_mut(c * s).with_min_len(min_items(c * s)).enumerate().for_each(|(i, sample)| {
            for (ch, row) in sample.chunks_mut(s.max(1)).enumerate() {
                f(i, ch, row);
            }
        });
    };
    // SAFETY: every row is handed to `f`, which writes all of it (both callers zip the row
    // with an input row of the same length).
    unsafe { filled(n * c * s, fill) }
}

impl BatchNormBackend for Flex {
    fn byol_bn_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let dims = layout(&x);
        let shape = x.shape();
        let [n, c, s] = dims;
        let (xv, gv, bv) = (values_f32(&x), values_f32(&gamma), values_f32(&beta));
        let count = (n * s).max(1) as f64;
        let row = |i: usize, ch: usize| &xv[(i * c + ch) * s..][..s];
        let sums = channel_sums(dims, |i, ch| {
            let r = row(i, ch);
            (lane_sum(r, r, |x, _| x as f64), 0.0)
        });
        let mean: Vec<f32> = sums.iter().map(|(a, _)| (*a / count) as f32).collect();
        let sq = channel_sums(dims, |i, ch| {
            let (r, m) = (row(i, ch), mean[ch] as f64);
            (lane_sum(r, r, |x, _| (x as f64 - m) * (x as f64 - m)), 0.0)
        });
        let var: Vec<f32> = sq.iter().map(|(a, _)| (*a / count) as f32).collect();
        let scale: Vec<f32> = (0..c).map(|ch| gv[ch] / (var[ch] + eps as f32).sqrt()).collect();
        let y = per_row_write(dims, |i, ch, out| {
            // (x − μ)·a + β, not x·a + (β − μ·a): no cancellation when |μ| ≫ σ.
            let (m, a, b) = (mean[ch], scale[ch], bv[ch]);
            for (o, v) in out.iter_mut().zip(row(i, ch)) {
                let t = (v - m) * a + b;
                o.write(if relu { t.max(0.0) } else { t });
            }
        });
        (FlexTensor::from_data(TensorData::new(y, shape)), vector(mean), vector(var))
    }

    fn byol_bn_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        y: FlexTensor,
        dy: FlexTensor,
        eps: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let dims = layout(&x);
        let shape = x.shape();
        let [n, c, s] = dims;
        let (xv, gv, mv, vv) = (values_f32(&x), values_f32(&gamma), values_f32(&mean), values_f32(&var));
        let (yv, dyv) = (values_f32(&y), values_f32(&dy));
        let at = move |i: usize, ch: usize| (i * c + ch) * s;
        // Gradient reaching the BatchNorm output: dy, zeroed by ReLU where the output is ≤ 0.
        let g: std::borrow::Cow<'_, [f32]> = if relu {
            let masked = dyv.par_iter().zip(yv.par_iter()).with_min_len(TASK_ELEMENTS);
            let masked = masked.map(|(d, y)| if *y <= 0.0 { 0.0 } else { *d });
            std::borrow::Cow::Owned(masked.collect())
        } else {
            std::borrow::Cow::Borrowed(&dyv[..])
        };
        let sums = channel_sums(dims, |i, ch| {
            let (gr, xr, m) = (&g[at(i, ch)..][..s], &xv[at(i, ch)..][..s], mv[ch] as f64);
            (lane_sum(gr, gr, |g, _| g as f64), lane_sum(gr, xr, |g, x| g as f64 * (x as f64 - m)))
        });
        let count = (n * s).max(1) as f64;
        let inv_std: Vec<f64> = (0..c).map(|ch| 1.0 / (vv[ch] as f64 + eps).sqrt()).collect();
        // dx = γ/σ · (g − mean(g) − x̂·mean(g·x̂)) = a·g + k·(x − μ) + b per channel (x − μ kept
        // as such: folding μ into b would cancel badly when |μ| ≫ σ).
        let mut coef = Vec::with_capacity(c);
        for ch in 0..c {
            let (sg, sgx) = sums[ch];
            let a = gv[ch] as f64 * inv_std[ch];
            let k = -a * inv_std[ch] * inv_std[ch] * sgx / count;
            let b = -a * sg / count;
            coef.push((a as f32, k as f32, b as f32));
        }
        let dx = per_row_write(dims, |i, ch, out| {
            let (a, k, b) = coef[ch];
            let (gr, xr, m) = (&g[at(i, ch)..][..s], &xv[at(i, ch)..][..s], mv[ch]);
            for ((d, gk), xk) in out.iter_mut().zip(gr).zip(xr) {
                d.write(a * gk + k * (xk - m) + b);
            }
        });
        let dgamma: Vec<f32> = (0..c).map(|ch| (sums[ch].1 * inv_std[ch]) as f32).collect();
        let dbeta: Vec<f32> = sums.iter().map(|(sg, _)| *sg as f32).collect();
        (FlexTensor::from_data(TensorData::new(dx, shape)), vector(dgamma), vector(dbeta))
    }
}

#[derive(Debug)]
struct BnBackward;

impl<B: BatchNormBackend> Backward<B, 3> for BnBackward {
    /// x, γ, mean, variance, output, ε, ReLU.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, mean, var, y, eps, relu) = ops.state;
        let (dx, dgamma, dbeta) = B::byol_bn_train_backward(x, gamma, mean, var, y, dy, eps, relu);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, dbeta);
        }
    }
}

impl<B: BatchNormBackend, C: CheckpointStrategy> BatchNormBackend for Autodiff<B, C> {
    fn byol_bn_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (xp, gp) = (x.into_primitive(), gamma.into_primitive());
        let (y, mean, var) = B::byol_bn_train(xp.clone(), gp.clone(), beta.into_primitive(), eps, relu);
        // The statistics leave untracked (they only feed the running estimates).
        let (mean_c, var_c) = (Self::from_inner(mean.clone()), Self::from_inner(var.clone()));
        let out = match BnBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, gp, mean, var, y.clone(), eps, relu), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (out, mean_c, var_c)
    }
}

/// `BYOL_BURN_BN=1` selects burn's own BatchNorm on the CPU too (for benchmarks).
fn burn_bn_requested() -> bool {
    static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::cpu_ops::env_switch(&FLAG, "BYOL_BURN_BN")
}

/// Whether `t` takes the fused kernel: float32 on the flex (CPU) backend, not switched off.
fn fused<const D: usize>(t: &Tensor<D>) -> bool {
    on_flex_f32(t) && !burn_bn_requested()
}

/// Training-mode BatchNorm over dimension 1 (then ReLU when `relu`): returns the output and
/// the batch's per-channel mean and biased variance (detached, for the running estimates).
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    relu: bool,
) -> (Tensor<D>, Tensor<1>, Tensor<1>) {
    if fused(&x) {
        let (y, mean, var) =
            Dispatch::byol_bn_train(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), eps, relu);
        let stat = |t| Tensor::<1>::from_dispatch(t).inner();
        return (Tensor::from_dispatch(y), stat(mean), stat(var));
    }
    let o = burn::tensor::module::batch_norm_train(x, gamma, beta, eps);
    let y = if relu { burn_relu(o.output) } else { o.output };
    (y, o.mean.inner(), o.variance.inner())
}
