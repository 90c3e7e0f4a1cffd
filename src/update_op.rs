//! The per-step parameter updates — LARS ([`crate::lars`]) and the target's moving average
//! ([`crate::ema`], paper §3.1: ξ ← τξ + (1−τ)θ) — as single parallel passes on the CPU (flex)
//! backend, a burn backend extension like [`crate::bn_op`].
//!
//! Composed from burn's tensor operations, LARS takes ten element-wise passes per parameter
//! tensor (each allocating its output) and the moving average three, all on the calling thread
//! while the other threads wait. Here LARS reads the parameter and its gradient once for the two
//! norms, then writes the new parameter and momentum in one pass; the average is one pass.
//! Element-wise arithmetic is the composition's, operation for operation (float32, no fused
//! multiply-adds), so the only difference is the norms' summation order: float64 over fixed
//! chunks, added in order, so the result does not depend on the thread count. GPU backends keep
//! the composition.

use std::mem::MaybeUninit;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, Flex, TensorMetadata};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::cpu_ops::{filled, values, zip_map, TASK_ELEMENTS};

/// LARS hyper-parameters of one update (see [`crate::lars::Lars`]).
#[derive(Clone, Copy, Debug)]
pub struct LarsStep {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub eta: f32,
    /// Biases and BatchNorm parameters: no weight decay, no trust ratio.
    pub excluded: bool,
}

const EXCLUDED: u8 = 1;
/// No momentum yet (the first step): μ = g.
const FIRST: u8 = 2;

/// Parameter updates on flat parameter tensors.
#[backend_extension(Flex)]
pub trait UpdateBackend: burn::backend::Backend {
    /// One LARS update of the parameter `w` with gradient `g` and momentum `mu` (ignored on the
    /// first step; `flags`: 1 = excluded from weight decay and trust ratio, 2 = first step);
    /// returns the new parameter and momentum.
    #[allow(clippy::too_many_arguments)]
    fn byol_lars(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        mu: FloatTensor<Self>,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        eta: f32,
        flags: u8,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// `t·τ + o·(1 − τ)`.
    fn byol_ema(t: FloatTensor<Self>, o: FloatTensor<Self>, tau: f32) -> FloatTensor<Self>;
}

/// Σ f(a[k], b[k]) over two slices of equal length in float64: short ones in order, longer ones
/// over 8 interleaved lanes (a fixed order), then the lanes in order. Walks the slices in chunks
/// of 8, so there are no bounds checks and the compiler vectorises the lanes.
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
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

/// `Σ f(a[k], b[k])` in float64 over fixed chunks in parallel, the chunks' sums added in order.
fn sum_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64 + Sync) -> f64 {
    let chunks = a.par_chunks(TASK_ELEMENTS).zip(b.par_chunks(TASK_ELEMENTS));
    let parts: Vec<f64> = chunks.map(|(x, y)| lane_sum(x, y, &f)).collect();
    parts.iter().sum()
}

fn tensor(v: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, like.shape()))
}

impl UpdateBackend for Flex {
    fn byol_lars(
        w: FlexTensor,
        g: FlexTensor,
        mu: FlexTensor,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        eta: f32,
        flags: u8,
    ) -> (FlexTensor, FlexTensor) {
        let (wv, gv) = (values(&w, "LARS"), values(&g, "LARS"));
        assert_eq!(wv.len(), gv.len(), "LARS: parameter and gradient sizes differ");
        let (excluded, first) = (flags & EXCLUDED != 0, flags & FIRST != 0);
        // The update direction before momentum: g + wd·w, scaled by the trust ratio.
        let decayed = |g: f32, w: f32| if excluded { g } else { g + w * weight_decay };
        let ratio = if excluded {
            1.0
        } else {
            let pn = sum_pairs(&wv, &wv, |w, _| (w as f64) * (w as f64)).sqrt() as f32;
            let gn = sum_pairs(&gv, &wv, |g, w| {
                let d = decayed(g, w) as f64;
                d * d
            })
            .sqrt() as f32;
            if pn > 0.0 && gn > 0.0 {
                pn * eta / gn.max(1e-30)
            } else {
                1.0
            }
        };
        let muv = if first { None } else { Some(values(&mu, "LARS")) };
        let n = wv.len();
        let mut new_mu = Vec::new();
        let fill = |wo: &mut [MaybeUninit<f32>]| {
            let fill_mu = |mo: &mut [MaybeUninit<f32>]| {
                let chunks = wo.par_chunks_mut(TASK_ELEMENTS).zip(mo.par_chunks_mut(TASK_ELEMENTS));
                chunks.enumerate().for_each(|(ci, (wo, mo))| {
                    let at = ci * TASK_ELEMENTS;
                    for (k, (o, m)) in wo.iter_mut().zip(mo.iter_mut()).enumerate() {
                        let (wk, gk) = (wv[at + k], gv[at + k]);
                        let u = decayed(gk, wk) * ratio;
                        let mk = match &muv {
                            Some(prev) => prev[at + k] * momentum + u,
                            None => u,
                        };
                        m.write(mk);
                        o.write(wk - mk * lr);
                    }
                });
            };
            // SAFETY: every chunk of the momentum is written in full.
            new_mu = unsafe { filled(n, fill_mu) };
        };
        // SAFETY: every chunk of the parameter is written in full (with the momentum).
        let new_w = unsafe { filled(n, fill) };
        (tensor(new_w, &w), tensor(new_mu, &w))
    }

    fn byol_ema(t: FlexTensor, o: FlexTensor, tau: f32) -> FlexTensor {
        let (tv, ov) = (values(&t, "EMA"), values(&o, "EMA"));
        assert_eq!(tv.len(), ov.len(), "EMA: target and online sizes differ");
        tensor(zip_map(&tv, &ov, |t, o| t * tau + o * (1.0 - tau)), &t)
    }
}

/// One LARS update on the CPU: returns the new parameter and momentum (`prev`: the momentum so
/// far, `None` on the first step).
pub fn lars(w: Tensor<1>, g: Tensor<1>, prev: Option<Tensor<1>>, step: LarsStep) -> (Tensor<1>, Tensor<1>) {
    let flags = if step.excluded { EXCLUDED } else { 0 } | if prev.is_none() { FIRST } else { 0 };
    let mu = prev.unwrap_or_else(|| g.clone());
    let (w, mu) = Dispatch::byol_lars(
        w.into_dispatch(),
        g.into_dispatch(),
        mu.into_dispatch(),
        step.lr,
        step.momentum,
        step.weight_decay,
        step.eta,
        flags,
    );
    (Tensor::from_dispatch(w), Tensor::from_dispatch(mu))
}

/// `t·τ + o·(1 − τ)` on the CPU.
pub fn ema(t: Tensor<1>, o: Tensor<1>, tau: f32) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::byol_ema(t.into_dispatch(), o.into_dispatch(), tau))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lars::Lars;
    use burn::tensor::Device;

    fn vector(n: usize, seed: u64, scale: f32) -> Tensor<1> {
        // A fixed pseudo-random sequence (64-bit LCG), centred, plus a few exact zeros.
        let mut s = seed;
        let v: Vec<f32> = (0..n)
            .map(|i| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if i % 97 == 0 {
                    0.0
                } else {
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                }
            })
            .collect();
        Tensor::from_data(TensorData::new(v, [n]), &Device::flex())
    }

    fn max_rel_diff(a: &Tensor<1>, b: &Tensor<1>) -> f32 {
        let (a, b) = (crate::params::to_vec(a), crate::params::to_vec(b));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The fused pass agrees with burn's composition (to the norms' rounding) for weighted and
    /// excluded tensors, with and without momentum, over several chunks and a partial one.
    #[test]
    fn lars_matches_the_composition() {
        let opt = Lars::new(0.9, 1.5e-6, 1e-3);
        let n = 3 * TASK_ELEMENTS + 1234;
        for excluded in [false, true] {
            for with_momentum in [false, true] {
                let (w, g) = (vector(n, 1, 0.2), vector(n, 2, 0.01));
                let prev = with_momentum.then(|| vector(n, 3, 0.05));
                let step = LarsStep { lr: 0.4, momentum: 0.9, weight_decay: 1.5e-6, eta: 1e-3, excluded };
                let (w1, m1) = lars(w.clone(), g.clone(), prev.clone(), step);
                let (w2, m2) = opt.composed(w.clone(), g, prev, 0.4, excluded);
                let (dm, dw) = (max_rel_diff(&m1, &m2), max_rel_diff(&w1, &w2));
                assert!(dm < 1e-5 && dw < 1e-6, "excluded {excluded}, momentum {with_momentum}: Δμ {dm}, Δw {dw}");
                // The update moved the parameters (so the comparison above is not vacuous).
                assert!(max_rel_diff(&w1, &w) > 1e-4);
            }
        }
        // A zero parameter tensor: trust ratio 1, as in the composition.
        let (w, g) = (vector(100, 4, 0.0), vector(100, 5, 0.01));
        let step = LarsStep { lr: 0.1, momentum: 0.9, weight_decay: 1.5e-6, eta: 1e-3, excluded: false };
        let (w1, _) = lars(w.clone(), g.clone(), None, step);
        let (w2, _) = opt.composed(w, g, None, 0.1, false);
        assert_eq!(max_rel_diff(&w1, &w2), 0.0);
    }

    #[test]
    fn ema_is_the_composition_exactly() {
        let n = 2 * TASK_ELEMENTS + 7;
        let (t, o) = (vector(n, 6, 1.0), vector(n, 7, 1.0));
        let fused = ema(t.clone(), o.clone(), 0.996);
        let composed = t * 0.996 + o * (1.0 - 0.996f32);
        assert_eq!(crate::params::to_vec(&fused), crate::params::to_vec(&composed));
    }
}
