//! The matrix product of a fully connected layer, `y = x·Wᵀ` with a torch-layout weight
//! `W [out, in]` (the projector and predictor MLPs, paper §3.3), as a burn operation with its own
//! backward pass on the CPU (flex) backend, like [`crate::conv_op`].
//!
//! burn 0.22.1 differentiates `x.matmul(w.transpose())` through a transpose node and a matmul
//! node whose backward pass copies transposed operands on the calling thread: with 4096-wide
//! heads that was 3 % of the CIFAR width-16 step while the other threads waited (`perf`, sixth
//! session). Here every product — `y = x·Wᵀ`, `dx = dy·W`, `dW = dyᵀ·x` — is one call of the
//! `gemm` crate on strided views (no copies), spread over the threads; each output element's
//! sum runs in one order whatever the thread count. GPU backends keep burn's matmul.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, Flex, TensorMetadata};
use burn::tensor::{DType, Tensor, TensorData};
use gemm::Parallelism;

use crate::cpu_ops::{on_flex_f32, values, zeros};
use crate::dense::{gemm_into, MatRef};

/// `x [m, k] · wᵀ` for `w [n, k]`, and its gradients.
#[backend_extension(Flex, Autodiff)]
pub trait LinearBackend: burn::backend::Backend {
    /// `x [m, k] · w [n, k]ᵀ` → `[m, n]`.
    fn byol_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Input gradient `dy · w` (called by the autodiff node on the inner backend; the autodiff
    /// backend itself has no second-order gradients).
    fn byol_linear_dx(w: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let _ = (w, dy);
        unimplemented!("second-order gradients of the linear layer are not supported")
    }
    /// Weight gradient `dyᵀ · x` (same default).
    fn byol_linear_dw(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let _ = (x, dy);
        unimplemented!("second-order gradients of the linear layer are not supported")
    }
}

fn dims2(t: &impl TensorMetadata) -> [usize; 2] {
    let s = t.shape();
    assert_eq!(s.num_dims(), 2, "linear layer: expected a matrix, got shape {s:?}");
    [s[0], s[1]]
}

/// `a · b` into a new `[a.rows, b.cols]` tensor, over every thread.
fn product(a: MatRef<'_>, b: MatRef<'_>) -> FlexTensor {
    let mut out = zeros(a.rows * b.cols);
    gemm_into(&mut out, false, a, b, Parallelism::Rayon(0));
    FlexTensor::from_data(TensorData::new(out, [a.rows, b.cols]))
}

impl LinearBackend for Flex {
    fn byol_linear(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        let ([m, k], [n, kw]) = (dims2(&x), dims2(&w));
        assert_eq!(k, kw, "linear layer: input [{m}, {k}] does not fit weight [{n}, {kw}]");
        let (xv, wv) = (values(&x, "linear layer"), values(&w, "linear layer"));
        product(MatRef::row_major(&xv, m, k), MatRef::row_major(&wv, n, k).t())
    }
    fn byol_linear_dx(w: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let ([n, k], [m, _]) = (dims2(&w), dims2(&dy));
        let (wv, dyv) = (values(&w, "linear layer"), values(&dy, "linear layer"));
        product(MatRef::row_major(&dyv, m, n), MatRef::row_major(&wv, n, k))
    }
    fn byol_linear_dw(x: FlexTensor, dy: FlexTensor) -> FlexTensor {
        let ([m, k], [_, n]) = (dims2(&x), dims2(&dy));
        let (xv, dyv) = (values(&x, "linear layer"), values(&dy, "linear layer"));
        product(MatRef::row_major(&dyv, m, n).t(), MatRef::row_major(&xv, m, k))
    }
}

#[derive(Debug)]
struct LinearBackward;

impl<B: LinearBackend> Backward<B, 2> for LinearBackward {
    /// Input, weight.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, w) = ops.state;
        if let Some(node) = node_w {
            grads.register::<B>(node.id, B::byol_linear_dw(x, dy.clone()));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::byol_linear_dx(w, dy));
        }
    }
}

impl<B: LinearBackend, C: CheckpointStrategy> LinearBackend for Autodiff<B, C> {
    fn byol_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        match LinearBackward.prepare::<C>([x.node(), w.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, w) = (x.into_primitive(), w.into_primitive());
                let out = B::byol_linear(x.clone(), w.clone());
                prep.finish((x, w), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::byol_linear(x.into_primitive(), w.into_primitive())),
        }
    }
}

/// `x [m, k] · wᵀ` for a torch-layout weight `w [n, k]`: the kernels above on the CPU backend
/// for float32, burn's `matmul` elsewhere.
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    if on_flex_f32(&x) && w.dtype() == DType::F32 {
        Tensor::from_dispatch(Dispatch::byol_linear(x.into_dispatch(), w.into_dispatch()))
    } else {
        x.matmul(w.transpose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// Forward and both gradients agree with burn's `x.matmul(w.transpose())`.
    #[test]
    fn matches_burn_matmul_and_its_gradients() {
        let dev = Device::flex().autodiff();
        for (m, k, n) in [(5, 7, 3), (64, 130, 257)] {
            let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let w = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let r = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &dev);
            let ours = linear(x.clone(), w.clone());
            let theirs = x.clone().matmul(w.clone().transpose());
            let close = |a: Tensor<2>, b: Tensor<2>, what: &str| {
                let (a, b) = (crate::params::to_vec(&a.inner()), crate::params::to_vec(&b.inner()));
                let scale = b.iter().fold(0f32, |s, v| s.max(v.abs()));
                let err = a.iter().zip(&b).fold(0f32, |s, (p, q)| s.max((p - q).abs()));
                assert!(scale > 0.1 && err <= 1e-5 * scale, "{what} [{m}, {k}]·[{n}, {k}]ᵀ: error {err} of {scale}");
            };
            close(ours.clone(), theirs.clone(), "forward");
            let (g1, g2) = ((ours * r.clone()).sum().backward(), (theirs * r).sum().backward());
            let grad = |t: &Tensor<2>, g| Tensor::<2>::from_inner(t.grad(g).expect("gradient"));
            close(grad(&x, &g1), grad(&x, &g2), "input gradient");
            close(grad(&w, &g1), grad(&w, &g2), "weight gradient");
        }
    }
}
