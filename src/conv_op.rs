//! The convolution of [`crate::conv`] as a burn operation with its own backward pass (a burn
//! backend extension: a kernel for the `Flex` CPU backend plus an `Autodiff` node), so the
//! ResNet's training graph uses it like burn's `conv2d`. Other backends (Vulkan, CUDA) keep
//! burn's convolution: [`conv2d`] routes by device.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, Flex, TensorMetadata};
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::conv::{self, ConvGeom};
use crate::cpu_ops::{on_flex_f32, values, SIDE_BY_SIDE_MAX_MACS};

/// Bias-free 2-D convolution with a square kernel and symmetric padding, and its gradients.
#[backend_extension(Flex, Autodiff)]
pub trait ConvBackend: burn::backend::Backend {
    /// `x [n, c, h, w] ⊛ weight [o, c, k, k]`.
    fn byol_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, pad: usize) -> FloatTensor<Self>;
    /// Input gradient of [`ConvBackend::byol_conv2d`] for the output gradient `dy`, called by the
    /// autodiff node on the inner backend. The default (taken by the autodiff backend itself)
    /// states that second-order gradients are not supported.
    fn byol_conv2d_dx(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        let _ = (x, weight, dy, stride, pad);
        unimplemented!("second-order gradients of the convolution are not supported")
    }
    /// Weight gradient of [`ConvBackend::byol_conv2d`] for the output gradient `dy` (same default).
    fn byol_conv2d_dw(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        stride: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        let _ = (x, weight, dy, stride, pad);
        unimplemented!("second-order gradients of the convolution are not supported")
    }
}

fn values_f32(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    values(t, "convolution")
}

fn dims4(t: &impl TensorMetadata) -> [usize; 4] {
    let s = t.shape();
    assert_eq!(s.num_dims(), 4, "convolution: expected a rank-4 tensor, got shape {s:?}");
    [s[0], s[1], s[2], s[3]]
}

fn geom(x: &FlexTensor, w: &FlexTensor, stride: usize, pad: usize) -> ConvGeom {
    let (xd, wd) = (dims4(x), dims4(w));
    ConvGeom::new(xd, wd, stride, pad).unwrap_or_else(|| {
        panic!("convolution: input {xd:?} and weight {wd:?} do not fit (stride {stride}, padding {pad})")
    })
}

fn flex(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl ConvBackend for Flex {
    fn byol_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, pad: usize) -> FlexTensor {
        let g = geom(&x, &weight, stride, pad);
        flex(conv::forward(&g, &values_f32(&x), &values_f32(&weight)), [g.n, g.o, g.oh, g.ow])
    }
    fn byol_conv2d_dx(x: FlexTensor, weight: FlexTensor, dy: FlexTensor, stride: usize, pad: usize) -> FlexTensor {
        let g = geom(&x, &weight, stride, pad);
        flex(conv::backward_input(&g, &values_f32(&dy), &values_f32(&weight)), [g.n, g.c, g.h, g.w])
    }
    fn byol_conv2d_dw(x: FlexTensor, weight: FlexTensor, dy: FlexTensor, stride: usize, pad: usize) -> FlexTensor {
        let g = geom(&x, &weight, stride, pad);
        flex(conv::backward_weight(&g, &values_f32(&x), &values_f32(&dy)), [g.o, g.c, g.k, g.k])
    }
}

#[derive(Debug)]
struct ConvBackward;

impl<B: ConvBackend> Backward<B, 2> for ConvBackward {
    /// Input, weight, stride, padding.
    type State = (FloatTensor<B>, FloatTensor<B>, usize, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (x, w, stride, pad) = ops.state;
        // The two gradients are independent: computed side by side, small convolutions (too
        // little work to spread one pass over every thread) keep both threads busy. Each
        // kernel's result does not depend on threads, so neither does the step's.
        let small = ConvGeom::new(dims4(&x), dims4(&w), stride, pad).is_some_and(|g| g.macs() <= SIDE_BY_SIDE_MAX_MACS);
        let dw = || node_w.as_ref().map(|_| B::byol_conv2d_dw(x.clone(), w.clone(), dy.clone(), stride, pad));
        let dx = || node_x.as_ref().map(|_| B::byol_conv2d_dx(x.clone(), w.clone(), dy.clone(), stride, pad));
        let (dw, dx) = if small { rayon::join(dw, dx) } else { (dw(), dx()) };
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<B>(node.id, dw);
        }
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, dx);
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    fn byol_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, pad: usize) -> FloatTensor<Self> {
        match ConvBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, w) = (x.into_primitive(), weight.into_primitive());
                let out = B::byol_conv2d(x.clone(), w.clone(), stride, pad);
                prep.finish((x, w, stride, pad), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::byol_conv2d(x.into_primitive(), weight.into_primitive(), stride, pad))
            }
        }
    }
}

/// `BYOL_BURN_CONV=1` selects burn's own convolution on the CPU too (for benchmarks).
fn burn_conv_requested() -> bool {
    static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::cpu_ops::env_switch(&FLAG, "BYOL_BURN_CONV")
}

/// Nominal multiply-adds of the convolutions run through [`conv2d`] so far (see [`nominal_macs`]).
static NOMINAL_MACS: AtomicUsize = AtomicUsize::new(0);

/// Multiply-adds of every convolution pass requested through [`conv2d`] so far in this process,
/// counted from the geometry alone (`n·o·c·k²·oh·ow` per pass: the forward, plus the weight
/// gradient when the input is on the autodiff backend and the input gradient when the input
/// itself is tracked), whatever backend or kernel runs them and whatever work a kernel skips
/// (taps that only read padding): the FLOP basis of `byol bench`, comparable with PyTorch.
pub fn nominal_macs() -> usize {
    NOMINAL_MACS.load(Ordering::Relaxed)
}

/// Bias-free 2-D convolution with symmetric padding: the im2col + GEMM kernels on the CPU
/// backend for float32 (differentiable through the autodiff node above), burn's `conv2d`
/// elsewhere (GPU backends, float64).
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    if let Some(g) = ConvGeom::new(x.dims(), weight.dims(), stride, pad) {
        let passes = 1 + usize::from(weight.is_tracked()) + usize::from(x.is_tracked());
        NOMINAL_MACS.fetch_add(passes * g.macs(), Ordering::Relaxed);
    }
    if on_flex_f32(&x) && weight.dtype() == DType::F32 && !burn_conv_requested() {
        Tensor::from_dispatch(Dispatch::byol_conv2d(x.into_dispatch(), weight.into_dispatch(), stride, pad))
    } else {
        burn_conv2d(x, weight, None, ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1))
    }
}
