//! Cross-replica (synchronised) BatchNorm: batch statistics over the global batch of all
//! data-parallel replicas, as in the paper's distributed training (§3.3, App. J: statistics
//! aggregated across devices). burn has no SyncBatchNorm, so it is built here on the collective
//! of [`crate::distributed`], as a burn backend extension ([`CollectiveOps`]) with a handwritten
//! autodiff backward:
//!
//! * [`batch_norm_train`]: forward all-reduces the per-channel Σx, then Σ(x − μ)² (two passes,
//!   an exact variance), and normalises with burn's `batch_norm`; backward is PyTorch's
//!   SyncBatchNorm: Σdy and Σdy·x̂ are all-reduced so each replica's input gradient contains the
//!   terms of every replica's loss; dγ, dβ stay local (averaged with the other gradients).
//! * [`collective_sum`]: a differentiable all-reduce (its backward all-reduces the gradient);
//!   [`batch_norm_train_reference`] composes it with ordinary tensor arithmetic — slower, an
//!   independent check of the fused operation in the tests.
//!
//! Every collective carries a header (call tag, samples per replica) that all replicas must agree
//! on: replicas out of step stop with a message instead of mixing different layers' statistics.

use std::cell::Cell;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, read_sync, Backend, Dispatch, Scalar, TensorMetadata};
use burn::tensor::Shape;
use burn::tensor::{Tensor, TensorData};

use crate::distributed::Collective;

thread_local! {
    /// Tags sent with every collective sum: replicas must reduce the same statistic at the same
    /// time; a mismatch (replicas out of step) is detected instead of silently mixing layers.
    /// Per thread: replicas that are threads of one process ([`crate::replicas`]) count apart.
    static NEXT_TAG: Cell<u32> = const { Cell::new(0) };
}

/// The next `n` tags of this replica.
fn next_tags(n: u32) -> u32 {
    NEXT_TAG.with(|t| {
        let tag = t.get();
        t.set((tag + n) % TAG_MOD);
        tag
    })
}

/// Tags below 2^20 stay exact in f32 sums over up to 16 replicas.
const TAG_MOD: u32 = 1 << 19;
const BACKWARD_TAG: u32 = 1 << 19;

/// Backend extension: collectives over the process group ([`crate::distributed::global`]).
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "vulkan", feature = "cuda")),
    Autodiff,
)]
pub trait CollectiveOps: Backend {
    /// Sum of `x` over all replicas (same shape on every replica). `tag` identifies the call,
    /// `count` is the number of samples behind `x`, which must be equal on every replica.
    fn collective_sum(x: FloatTensor<Self>, tag: u32, count: u32) -> FloatTensor<Self> {
        let shape = x.shape();
        let device = x.device();
        let mut v = host::<Self>(x);
        reduce_checked(&mut v, tag, count);
        Self::float_from_data(TensorData::new(v, shape), &device)
    }

    /// Training-mode BatchNorm over dimension 1 with the statistics of the global batch:
    /// returns (output, mean, biased variance). Uses the tags `tag` and `tag + 1`.
    fn sync_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        tag: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let device = x.device();
        let (mean, var) = global_moments::<Self>(x.clone(), tag);
        let c = mean.len();
        let mean = Self::float_from_data(TensorData::new(mean, [c]), &device);
        let var = Self::float_from_data(TensorData::new(var, [c]), &device);
        let y = Self::batch_norm(x, gamma, beta, mean.clone(), var.clone(), epsilon);
        (y, mean, var)
    }
}

#[cfg(feature = "flex")]
impl CollectiveOps for burn::backend::Flex {}
#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl CollectiveOps for burn::backend::Cube {}

/// Host copy of a float tensor.
fn host<B: Backend>(x: FloatTensor<B>) -> Vec<f32> {
    let data = read_sync(B::float_into_data(x)).expect("cross-replica BatchNorm: cannot read a tensor");
    data.convert::<f32>().try_into_vec::<f32>().expect("cross-replica BatchNorm: not f32")
}

/// `[channels, ...]`-shaped broadcast of a per-channel vector for an input of `shape`.
fn per_channel<B: Backend>(v: FloatTensor<B>, rank: usize, channels: usize) -> FloatTensor<B> {
    let mut dims = vec![1; rank];
    dims[1] = channels;
    B::float_reshape(v, Shape::from(dims))
}

/// Per-channel sums over every dimension but 1, on the host.
fn channel_sums<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let shape = t.shape();
    let c = shape[1];
    let flat = B::float_reshape(B::float_swap_dims(t, 0, 1), Shape::new([c, shape.num_elements() / c]));
    host::<B>(B::float_sum_dim(flat, 1))
}

/// Samples per channel on this replica and over all replicas.
fn counts(shape: &Shape) -> (usize, usize) {
    let n_local = shape.num_elements() / shape[1].max(1);
    (n_local, n_local * crate::distributed::global().size())
}

/// Global per-channel mean and biased variance of `x` (two passes: Σx, then Σ(x − mean)²).
fn global_moments<B: Backend>(x: FloatTensor<B>, tag: u32) -> (Vec<f32>, Vec<f32>) {
    let shape = x.shape();
    let (rank, c) = (shape.num_dims(), shape[1]);
    let (n_local, n) = counts(&shape);
    let count = u32::try_from(n_local).unwrap_or(u32::MAX);
    let mut mean = channel_sums::<B>(x.clone());
    reduce_checked(&mut mean, tag, count);
    mean.iter_mut().for_each(|m| *m /= n as f32);
    let mean_t = B::float_from_data(TensorData::new(mean.clone(), [c]), &x.device());
    let centered = B::float_sub(x, per_channel::<B>(mean_t, rank, c));
    let mut var = channel_sums::<B>(B::float_mul(centered.clone(), centered));
    reduce_checked(&mut var, tag + 1, count);
    var.iter_mut().for_each(|v| *v /= n as f32);
    (mean, var)
}

impl<B: Backend + CollectiveOps, C: CheckpointStrategy> CollectiveOps for Autodiff<B, C> {
    fn collective_sum(x: FloatTensor<Self>, tag: u32, count: u32) -> FloatTensor<Self> {
        /// d(Σ_r x_r)/dx_r = 1 on every replica, and the loss is the sum of every replica's
        /// loss: the gradient reaching x_r is the sum over replicas of the output gradients.
        #[derive(Debug)]
        struct CollectiveSumBackward;

        impl<B: Backend + CollectiveOps> Backward<B, 1> for CollectiveSumBackward {
            type State = (u32, u32);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
                let (tag, count) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| B::collective_sum(g, tag | BACKWARD_TAG, count));
            }
        }

        let node = x.node();
        let out = B::collective_sum(x.into_primitive(), tag, count);
        match CollectiveSumBackward.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((tag, count), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn sync_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        tag: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        /// Backward of BatchNorm with global statistics (as PyTorch's SyncBatchNorm): with
        /// x̂ = (x − μ)/σ, dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂)), where the means run
        /// over the global batch, so Σdy and Σdy·(x − μ) are all-reduced; dγ = Σdy·x̂ and
        /// dβ = Σdy stay local (the parameter gradients are averaged over replicas later).
        #[derive(Debug)]
        struct SyncBnBackward;

        impl<B: Backend + CollectiveOps> Backward<B, 3> for SyncBnBackward {
            /// x, γ, mean, biased variance, ε, tag.
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64, u32);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _c: &mut Checkpointer) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let (x, gamma, mean, var, eps, tag) = ops.state;
                let shape = x.shape();
                let (rank, c) = (shape.num_dims(), shape[1]);
                let (n_local, n) = counts(&shape);
                let inv_std = B::float_recip(B::float_sqrt(B::float_add_scalar(var, Scalar::Float(eps))));
                let inv_std_b = per_channel::<B>(inv_std.clone(), rank, c);
                let x_hat = B::float_mul(B::float_sub(x, per_channel::<B>(mean, rank, c)), inv_std_b.clone());
                let sum_dy = channel_sums::<B>(dy.clone());
                let sum_dy_xhat = channel_sums::<B>(B::float_mul(dy.clone(), x_hat.clone()));
                let device = dy.device();
                let vec_t = |v: Vec<f32>| B::float_from_data(TensorData::new(v, [c]), &device);
                if let Some(node) = node_gamma {
                    grads.register::<B>(node.id, vec_t(sum_dy_xhat.clone()));
                }
                if let Some(node) = node_beta {
                    grads.register::<B>(node.id, vec_t(sum_dy.clone()));
                }
                if let Some(node) = node_x {
                    let mut both = sum_dy;
                    both.extend(sum_dy_xhat);
                    reduce_checked(&mut both, tag | BACKWARD_TAG, u32::try_from(n_local).unwrap_or(u32::MAX));
                    both.iter_mut().for_each(|v| *v /= n as f32);
                    let mean_dy = per_channel::<B>(vec_t(both[..c].to_vec()), rank, c);
                    let mean_dy_xhat = per_channel::<B>(vec_t(both[c..].to_vec()), rank, c);
                    let inner = B::float_sub(B::float_sub(dy, mean_dy), B::float_mul(x_hat, mean_dy_xhat));
                    let scale = B::float_mul(per_channel::<B>(gamma, rank, c), inv_std_b);
                    grads.register::<B>(node.id, B::float_mul(inner, scale));
                }
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let device = x.device();
        let (x_p, gamma_p) = (x.primitive().clone(), gamma.primitive().clone());
        let (y, mean, var) =
            B::sync_batch_norm_train(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), epsilon, tag);
        // The statistics leave as constants (they only feed the running estimates).
        let constant = |t: FloatTensor<B>| {
            let c = t.shape()[0];
            Self::float_from_data(TensorData::new(host::<B>(t), [c]), &device)
        };
        let (mean_ad, var_ad) = (constant(mean.clone()), constant(var.clone()));
        let y = match SyncBnBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x_p, gamma_p, mean, var, epsilon, tag), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, mean_ad, var_ad)
    }
}

/// All-reduce of `v` with a header (tag, count) that every replica must agree on.
fn reduce_checked(v: &mut Vec<f32>, tag: u32, count: u32) {
    let c = crate::distributed::global();
    if c.size() == 1 {
        return;
    }
    let n = v.len();
    v.extend_from_slice(&[tag as f32, count as f32]);
    c.all_reduce_sum(v);
    let r = c.size() as f32;
    assert!(
        v[n] == tag as f32 * r && v[n + 1] == count as f32 * r,
        "cross-replica BatchNorm out of step on rank {}: statistic #{tag} over {count} samples here, replicas sent tag sum {} and count sum {} (replicas run different models or batch sizes)",
        c.rank(),
        v[n],
        v[n + 1]
    );
    v.truncate(n);
}

/// Differentiable sum of `x` over all replicas of the process collective.
pub fn collective_sum<const D: usize>(x: Tensor<D>, count: usize) -> Tensor<D> {
    let tag = next_tags(1);
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    Tensor::from_dispatch(<Dispatch as CollectiveOps>::collective_sum(x.into_dispatch(), tag, count))
}

/// Output of [`batch_norm_train`]: the normalised tensor and the global statistics.
pub struct SyncBnOutput<const D: usize> {
    pub output: Tensor<D>,
    /// Per-channel mean over the global batch (detached, inner backend).
    pub mean: Tensor<1>,
    /// Per-channel biased variance over the global batch (detached, inner backend).
    pub variance: Tensor<1>,
    /// Samples per channel over all replicas (N·H·W summed over replicas).
    pub count: usize,
}

/// Training-mode BatchNorm over dimension 1 of `x` with statistics over every replica of
/// `group` (which must be the process collective): y = γ·(x − μ)/√(σ² + ε) + β, one fused
/// autodiff operation whose backward all-reduces Σdy and Σdy·x̂ (PyTorch's SyncBatchNorm).
pub fn batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    group: &dyn Collective,
) -> SyncBnOutput<D> {
    let dims = x.dims();
    let n_local: usize = dims.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, d)| *d).product();
    let tag = next_tags(2);
    let (y, mean, var) = <Dispatch as CollectiveOps>::sync_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
        tag,
    );
    SyncBnOutput {
        output: Tensor::from_dispatch(y),
        mean: Tensor::<1>::from_dispatch(mean).inner(),
        variance: Tensor::<1>::from_dispatch(var).inner(),
        count: n_local * group.size(),
    }
}

/// The same statistics from differentiable building blocks ([`collective_sum`] and ordinary
/// tensor arithmetic): slower, kept as an independent reference for the tests.
pub fn batch_norm_train_reference<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    group: &dyn Collective,
) -> SyncBnOutput<D> {
    let dims = x.dims();
    let c = dims[1];
    let n_local: usize = dims.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, d)| *d).product();
    let count = n_local * group.size();
    let x3: Tensor<3> = x.reshape([dims[0], c, n_local / dims[0].max(1)]);
    let per_channel = |t: Tensor<3>| t.sum_dim(2).sum_dim(0).reshape([c]);
    let mean = collective_sum(per_channel(x3.clone()), n_local) / count as f32;
    let centered = x3 - mean.clone().reshape([1, c, 1]);
    let variance = collective_sum(per_channel(centered.clone().powi_scalar(2)), n_local) / count as f32;
    let inv_std = (variance.clone() + eps).sqrt().recip();
    let y = centered * (inv_std * gamma).reshape([1, c, 1]) + beta.reshape([1, c, 1]);
    SyncBnOutput { output: y.reshape(dims), mean: mean.detach().inner(), variance: variance.detach().inner(), count }
}
