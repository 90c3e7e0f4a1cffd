//! Training-mode BatchNorm (Ioffe & Szegedy 2015, Alg. 1), optionally followed by ReLU, as one
//! fused CPU operation with a hand-written backward pass: a burn backend extension (a `Flex`
//! kernel plus an `Autodiff` node), like the convolution of [`crate::conv_op`].
//!
//! burn 0.22.1 composes `batch_norm_train` from generic tensor operations (reshapes, permuted
//! copies, reductions, broadcasts) and differentiates each of them; on the `fashion-mnist`
//! step that was a fifth of the time. Here each pass reads the activations twice and writes once,
//! and ReLU is folded in (the kernels: [`crate::bn_kernels`]). GPU backends and float64 keep
//! burn's composition: [`batch_norm_train`] routes by device.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, AutodiffBackend, Dispatch, Flex, TensorMetadata};
use burn::tensor::activation::relu as burn_relu;
use burn::tensor::{Tensor, TensorData};

use crate::bn_kernels;
use crate::cpu_ops::{on_flex_f32, values};

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
    /// `dy`, given its input, γ, β and statistics (the ReLU mask is recomputed from them);
    /// called by the autodiff node on the inner backend (the autodiff backend itself does not
    /// support second-order gradients).
    #[allow(clippy::too_many_arguments)]
    fn byol_bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let _ = (x, gamma, beta, mean, var, dy, eps, relu);
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

impl BatchNormBackend for Flex {
    fn byol_bn_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (dims, shape) = (layout(&x), x.shape());
        let (xv, gv, bv) = (values_f32(&x), values_f32(&gamma), values_f32(&beta));
        let (y, mean, var) = bn_kernels::forward(&xv, &gv, &bv, dims, eps, relu);
        (FlexTensor::from_data(TensorData::new(y, shape)), vector(mean), vector(var))
    }

    fn byol_bn_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        dy: FlexTensor,
        eps: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (dims, shape) = (layout(&x), x.shape());
        let (xv, gv, bv) = (values_f32(&x), values_f32(&gamma), values_f32(&beta));
        let (mv, vv, dyv) = (values_f32(&mean), values_f32(&var), values_f32(&dy));
        let (dx, dgamma, dbeta) = bn_kernels::backward(&xv, &gv, &bv, &mv, &vv, &dyv, dims, eps, relu);
        (FlexTensor::from_data(TensorData::new(dx, shape)), vector(dgamma), vector(dbeta))
    }
}

#[derive(Debug)]
struct BnBackward;

impl<B: BatchNormBackend> Backward<B, 3> for BnBackward {
    /// x, γ, β, mean, variance, ε, ReLU.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64, bool);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, gamma, beta, mean, var, eps, relu) = ops.state;
        let (dx, dgamma, dbeta) = B::byol_bn_train_backward(x, gamma, beta, mean, var, dy, eps, relu);
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
        let (xp, gp, bp) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let (y, mean, var) = B::byol_bn_train(xp.clone(), gp.clone(), bp.clone(), eps, relu);
        // The statistics leave untracked (they only feed the running estimates).
        let (mean_c, var_c) = (Self::from_inner(mean.clone()), Self::from_inner(var.clone()));
        let out = match BnBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp, gp, bp, mean, var, eps, relu), y),
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
