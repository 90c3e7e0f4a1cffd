//! What the CPU extension operations ([`crate::conv_op`], [`crate::bn_op`], [`crate::pool_op`])
//! share: reading a flex tensor's values, deciding whether a tensor takes the CPU kernels, and
//! the size of their parallel tasks.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use burn::backend::flex::FlexTensor;
#[cfg(feature = "flex")]
use burn::backend::DispatchDevice;
use burn::tensor::{DType, Tensor};

/// Contiguous float32 values of a flex tensor (copied only when it is a strided view); `op`
/// names the operation in the panic message for other dtypes (the public wrappers route those
/// to burn's own operations, so it does not happen).
pub(crate) fn values<'a>(t: &'a FlexTensor, op: &str) -> Cow<'a, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "{op}: only float32 is supported on the CPU path");
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("contiguous").to_vec()),
    }
}

/// Whether `t` is a float32 tensor on the flex (CPU) backend, where the CPU kernels apply.
pub(crate) fn on_flex_f32<const D: usize>(t: &Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    {
        t.dtype() == DType::F32 && matches!(t.device().inner().as_dispatch(), DispatchDevice::Flex(_))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = t;
        false
    }
}

/// Largest convolution (multiply-adds) for which independent work runs side by side on the CPU
/// (the online and target forwards of a step, a convolution's two gradients). Below it the
/// threads would otherwise wait on small layers (the `fashion-mnist` step: 1.15× faster); above
/// it each convolution already keeps every thread busy and two at once only share the caches
/// (CIFAR ResNet-18 width 64: 3–4 % slower side by side; BENCHMARKS.md, third session).
pub(crate) const SIDE_BY_SIDE_MAX_MACS: usize = 1 << 31;

/// Elements per parallel task at least: below this, rayon's per-task cost (~1 µs) outweighs the
/// work (BatchNorm and pooling over small feature maps have rows of 1–49 values).
pub(crate) const TASK_ELEMENTS: usize = 16_384;

/// Parallel items per task when each item covers `item` elements.
pub(crate) fn min_items(item: usize) -> usize {
    (TASK_ELEMENTS / item.max(1)).max(1)
}

/// Whether the environment switch `var` (`BYOL_BURN_CONV`, `BYOL_BURN_BN`: burn's own operation
/// instead of the CPU kernel; `BYOL_ROW_UNFOLD`: the row-copy unfolding for wide convolutions;
/// `BYOL_IM2COL`: no direct convolution kernels; for benchmarks) is set to anything but `0`;
/// read once per process into `cell`.
pub(crate) fn env_switch(cell: &OnceLock<bool>, var: &str) -> bool {
    *cell.get_or_init(|| std::env::var_os(var).is_some_and(|v| v != "0"))
}

/// A vector of `len` floats written by `fill` into uninitialised memory: the kernels' outputs
/// (every element written once) skip zeroing them first (zeroing took 2–5 % of a CIFAR step).
///
/// # Safety
/// `fill` must write every one of the `len` elements of the slice it is given.
pub(crate) unsafe fn filled(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote all `len` elements (the caller's promise).
    unsafe { v.set_len(len) };
    v
}

/// `len` zeros, written by every thread in parallel chunks (a `vec![0.0; len]` of a large
/// output zeroes — and first touches — all of it on the calling thread).
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(TASK_ELEMENTS).for_each(|c| c.fill(MaybeUninit::new(0.0)));
    };
    // SAFETY: every chunk is written in full.
    unsafe { filled(len, fill) }
}

/// `f(a[k], b[k])` for every element, in parallel chunks (`a` and `b` of one length).
pub(crate) fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(a.len(), b.len(), "element-wise operation: lengths differ");
    let fill = |out: &mut [MaybeUninit<f32>]| {
        let chunks =
            out.par_chunks_mut(TASK_ELEMENTS).zip(a.par_chunks(TASK_ELEMENTS)).zip(b.par_chunks(TASK_ELEMENTS));
        chunks.for_each(|((o, a), b)| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                o.write(f(*a, *b));
            }
        });
    };
    // SAFETY: every chunk of the output is written in full.
    unsafe { filled(a.len(), fill) }
}
