//! Cross-replica (synchronised) BatchNorm: batch statistics over the global batch of all
//! data-parallel replicas, as in the paper's distributed training (§3.3, App. J: statistics
//! aggregated across devices). burn has no SyncBatchNorm, so it is built here on the collective
//! of [`crate::distributed`]:
//!
//! * [`collective_sum`] is a differentiable all-reduce (sum over replicas). Its backward sums the
//!   incoming gradients over replicas too, so each replica's input gradient contains the terms of
//!   every replica's loss. It is a burn backend extension with a handwritten autodiff backward.
//! * [`batch_norm_train`] normalises with the global per-channel mean and biased variance, both
//!   from all-reduced sums (two passes: Σx, then Σ(x−mean)², for an exact variance); the
//!   normalisation itself is ordinary differentiable burn arithmetic.

use std::sync::atomic::{AtomicU32, Ordering};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, read_sync, Backend, Dispatch, TensorMetadata};
use burn::tensor::{Tensor, TensorData};

use crate::distributed::Collective;

/// Tags sent with every collective sum: replicas must reduce the same statistic at the same
/// time; a mismatch (replicas out of step) is detected instead of silently mixing layers.
static NEXT_TAG: AtomicU32 = AtomicU32::new(0);
/// Tags below 2^20 stay exact in f32 sums over up to 16 replicas.
const TAG_MOD: u32 = 1 << 19;
const BACKWARD_TAG: u32 = 1 << 19;

/// Backend extension: all-reduce (sum over the process collective) of a float tensor.
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
        let data = read_sync(Self::float_into_data(x)).expect("collective_sum: cannot read the tensor");
        let mut v: Vec<f32> = data.convert::<f32>().try_into_vec::<f32>().expect("collective_sum: not f32");
        reduce_checked(&mut v, tag, count);
        Self::float_from_data(TensorData::new(v, shape), &device)
    }
}

#[cfg(feature = "flex")]
impl CollectiveOps for burn::backend::Flex {}
#[cfg(any(feature = "vulkan", feature = "cuda"))]
impl CollectiveOps for burn::backend::Cube {}

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
    let tag = NEXT_TAG.fetch_add(1, Ordering::SeqCst) % TAG_MOD;
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
/// `group` (which must be the process collective): y = γ·(x − μ)/√(σ² + ε) + β.
pub fn batch_norm_train<const D: usize>(
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
