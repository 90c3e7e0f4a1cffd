//! The join of a residual block, `relu(branch + shortcut)` (He et al. 2016, eq. 1 and Fig. 2),
//! as one parallel operation with its own backward pass on the CPU (flex) backend, like
//! [`crate::bn_op`].
//!
//! burn-flex 0.22.1 runs element-wise operations on one thread below 4 M elements, and the
//! composition `relu(a + b)` takes three passes forward (sum, ReLU) and backward (mask, and a
//! gradient per addend): every block of a CIFAR ResNet-18 did that on the calling thread while
//! the other threads waited (`perf`, sixth session). Here the forward pass is one parallel pass
//! and the backward pass one parallel masking whose result is the gradient of both addends.
//! ReLU's convention is burn's: the gradient is zero where the output is ≤ 0, NaN propagates.

use crate::cpu_ops::{self, on_flex_f32, values};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, Flex, TensorMetadata};
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, TensorData};

/// `relu(a + b)` and its gradient.
#[backend_extension(Flex, Autodiff)]
pub trait ResidualBackend: burn::backend::Backend {
    /// `max(a + b, 0)` element-wise (`a`, `b` of one shape).
    fn byol_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `dy` where the output `y` is > 0, else 0: the gradient of both addends (called by the
    /// autodiff node on the inner backend; no second-order gradients).
    fn byol_add_relu_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let _ = (y, dy);
        unimplemented!("second-order gradients of the residual join are not supported")
    }
}

/// `f(a[k], b[k])` for every element of two tensors of one shape.
fn zip_map(a: &FlexTensor, b: &FlexTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    assert_eq!(a.shape(), b.shape(), "residual join: shapes differ");
    let out = cpu_ops::zip_map(&values(a, "residual join"), &values(b, "residual join"), f);
    FlexTensor::from_data(TensorData::new(out, a.shape()))
}

impl ResidualBackend for Flex {
    fn byol_add_relu(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        zip_map(&a, &b, |a, b| {
            let s = a + b;
            if s <= 0.0 {
                0.0
            } else {
                s
            }
        })
    }
    fn byol_add_relu_backward(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        zip_map(&y, &dy, |y, d| if y <= 0.0 { 0.0 } else { d })
    }
}

#[derive(Debug)]
struct AddReluBackward;

impl<B: ResidualBackend> Backward<B, 2> for AddReluBackward {
    /// The output.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_a, node_b] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let g = B::byol_add_relu_backward(ops.state, dy);
        if let Some(node) = node_a {
            grads.register::<B>(node.id, g.clone());
        }
        if let Some(node) = node_b {
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: ResidualBackend, C: CheckpointStrategy> ResidualBackend for Autodiff<B, C> {
    fn byol_add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        match AddReluBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::byol_add_relu(a.into_primitive(), b.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::byol_add_relu(a.into_primitive(), b.into_primitive())),
        }
    }
}

/// `relu(a + b)`: the parallel kernels above on the CPU backend for float32, burn's operations
/// elsewhere.
pub fn add_relu<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    if on_flex_f32(&a) && on_flex_f32(&b) && a.dims() == b.dims() {
        Tensor::from_dispatch(Dispatch::byol_add_relu(a.into_dispatch(), b.into_dispatch()))
    } else {
        relu(a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Output and both addends' gradients equal burn's `relu(a + b)` exactly.
    #[test]
    fn matches_burns_composition() {
        let dev = Device::flex().autodiff();
        let shape = [3, 5, 40, 41];
        let a = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let b = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let r = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let (ours, theirs) = (add_relu(a.clone(), b.clone()), relu(a.clone() + b.clone()));
        let v = |t: Tensor<4>| crate::params::to_vec(&t.inner());
        let (yo, yt) = (v(ours.clone()), v(theirs.clone()));
        assert_eq!(yo, yt);
        assert!(yo.iter().filter(|x| **x == 0.0).count() > yo.len() / 4, "ReLU zeroes about half");
        let (g1, g2) = ((ours * r.clone()).sum().backward(), (theirs * r).sum().backward());
        for t in [&a, &b] {
            let grad = |g| crate::params::to_vec(&t.grad(g).expect("gradient"));
            let (go, gt) = (grad(&g1), grad(&g2));
            assert_eq!(go, gt);
            assert!(go.iter().any(|x| *x != 0.0));
        }
    }
}
