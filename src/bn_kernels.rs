//! The CPU (flex, float32) kernels of the fused training-mode BatchNorm + ReLU of
//! [`crate::bn_op`] (Ioffe & Szegedy 2015, Alg. 1, and its gradient), over `[n, c, s]` values:
//! batch, channels, positions per channel.
//!
//! Each pass works a block of channels at a time, over every image: first the channel sums
//! (forward: Σ(x − K) and Σ(x − K)², K one of the channel's values; backward: Σg and Σg·(x − μ),
//! g the output gradient through ReLU), then the output rows of the same channels, while what
//! the sums read is still in the core's L2 cache (a block holds at most [`BLOCK_ELEMENTS`] values
//! per input). So the forward pass reads x once from memory and writes y, the backward pass reads
//! x and dy once and writes dx. ReLU's mask is recomputed from x with the forward's own float32
//! arithmetic (bit for bit the same decision), so neither y nor a masked copy of dy is read or
//! written. (Before the ninth session: the forward pass read x three times from memory, the
//! backward pass made eight passes.) The loops run through [`vectorized`] (AVX-512 or AVX2).
//!
//! Determinism: each channel's sums run in one fixed order on one thread (rows in order, float64
//! lanes as [`crate::bn_sums`] lays them out), whatever the thread count, the blocks and the
//! instruction set, so training stays bit-reproducible.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::bn_sums::{self, Mask};
use crate::cpu_ops::filled;
use crate::vectorize::{vectorized, Kernel};

/// Values per input a block of channels holds at most (256 KB of float32: the backward pass's x
/// and dy of a block stay in L2 — 2 MB per core on this project's machine, 1 MB on older Xeons —
/// between its two passes).
const BLOCK_ELEMENTS: usize = 1 << 16;

/// One pass over `[n, c, s]` values, channel by channel. Implementations mark every method
/// `#[inline(always)]`, so they are compiled inside the vectorised block task.
trait ChannelPass: Sync {
    /// What a channel keeps from its sums for writing its rows (and returns).
    type Coef: Copy + Send;
    /// Two float64 sums over the rows of channel `ch` (all images).
    fn sums(&self, ch: usize) -> (f64, f64);
    /// The channel's coefficients from its sums over all rows.
    fn coef(&self, ch: usize, sums: (f64, f64)) -> Self::Coef;
    /// Writes every element of row `(i, ch)`.
    fn write(&self, i: usize, ch: usize, coef: Self::Coef, out: &mut [MaybeUninit<f32>]);
}

/// The output's first element, shared by the block tasks (each writes only its own channels'
/// rows).
#[derive(Clone, Copy)]
struct OutPtr(*mut MaybeUninit<f32>);
// SAFETY: the tasks write disjoint rows (their own channels) of one live allocation.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Channels `c0..c1`: their sums over every row (images in order), then their rows.
struct Block<'a, P> {
    pass: &'a P,
    dims: [usize; 3],
    channels: std::ops::Range<usize>,
    out: OutPtr,
}

impl<P: ChannelPass> Kernel for Block<'_, P> {
    type Output = Vec<P::Coef>;
    #[inline(always)]
    fn run(self) -> Vec<P::Coef> {
        let Self { pass, dims: [n, c, s], channels, out } = self;
        let sums: Vec<(f64, f64)> = channels.clone().map(|ch| pass.sums(ch)).collect();
        let coefs: Vec<P::Coef> = sums.iter().zip(channels.clone()).map(|(t, ch)| pass.coef(ch, *t)).collect();
        for i in 0..n {
            for (coef, ch) in coefs.iter().zip(channels.clone()) {
                // SAFETY: row (i, ch) lies inside the `n·c·s` output, and only this block
                // writes the rows of channel `ch`.
                let row = unsafe { std::slice::from_raw_parts_mut(out.0.add((i * c + ch) * s), s) };
                pass.write(i, ch, *coef, row);
            }
        }
        coefs
    }
}

/// Runs `pass` over blocks of channels in parallel: the `[n, c, s]` output (every row written,
/// the memory not zeroed first) and each channel's coefficients. Each channel's sums run over
/// the images in order whatever the blocks, so the results do not depend on the thread count.
fn run_pass<P: ChannelPass>(dims: [usize; 3], pass: &P) -> (Vec<f32>, Vec<P::Coef>) {
    let [n, c, s] = dims;
    // Channels per block: what fits the cache, and at least 8 blocks where there are channels
    // enough (both threads busy).
    let block = (BLOCK_ELEMENTS / (n * s).max(1)).clamp(1, c.div_ceil(8).max(1));
    let mut coefs = Vec::with_capacity(c);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        let out = OutPtr(y.as_mut_ptr());
        let blocks: Vec<Vec<P::Coef>> = (0..c.div_ceil(block))
            .into_par_iter()
            .map(|b| vectorized(Block { pass, dims, channels: b * block..c.min((b + 1) * block), out }))
            .collect();
        coefs.extend(blocks.into_iter().flatten());
    };
    // SAFETY: the blocks cover every channel, and each writes every row of its channels (the
    // passes zip each row with input rows of the same length).
    let y = unsafe { filled(n * c * s, fill) };
    (y, coefs)
}

/// Per-channel `γ/√(σ² + ε)` in float32 (forward and backward: the same arithmetic).
#[inline(always)]
fn scale(gamma: f32, var: f32, eps: f64) -> f32 {
    gamma / (var + eps as f32).sqrt()
}

/// The `[n, c, s]` row `(i, ch)` of `v`.
#[inline(always)]
fn row(v: &[f32], [_, c, s]: [usize; 3], i: usize, ch: usize) -> &[f32] {
    &v[(i * c + ch) * s..][..s]
}

/// The forward pass: statistics `Σ(x − K)`, `Σ(x − K)²` with K the channel's first value (one
/// of its own values: no cancellation unless |μ − K| ≫ σ), then `(x − μ)·a + β` (not
/// `x·a + (β − μ·a)`: no cancellation when |μ| ≫ σ) and ReLU.
struct Forward<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    dims: [usize; 3],
    eps: f64,
    relu: bool,
}

impl Forward<'_> {
    /// K: the channel's first value (image 0, position 0), or 0 for an empty channel.
    #[inline(always)]
    fn shift(&self, ch: usize) -> f64 {
        let [n, _, s] = self.dims;
        if n * s == 0 {
            0.0
        } else {
            self.x[ch * s] as f64
        }
    }
}

impl ChannelPass for Forward<'_> {
    /// μ, σ², a = γ/√(σ² + ε).
    type Coef = (f32, f32, f32);
    #[inline(always)]
    fn sums(&self, ch: usize) -> (f64, f64) {
        let rows = (0..self.dims[0]).map(|i| row(self.x, self.dims, i, ch));
        bn_sums::moments(rows, self.shift(ch))
    }
    #[inline(always)]
    fn coef(&self, ch: usize, (s1, s2): (f64, f64)) -> (f32, f32, f32) {
        let [n, _, s] = self.dims;
        let count = (n * s).max(1) as f64;
        let (m1, m2) = (s1 / count, s2 / count);
        let k = self.shift(ch);
        let var = (m2 - m1 * m1).max(0.0) as f32;
        ((k + m1) as f32, var, scale(self.gamma[ch], var, self.eps))
    }
    #[inline(always)]
    fn write(&self, i: usize, ch: usize, (m, _, a): (f32, f32, f32), out: &mut [MaybeUninit<f32>]) {
        let b = self.beta[ch];
        for (o, v) in out.iter_mut().zip(row(self.x, self.dims, i, ch)) {
            let t = (v - m) * a + b;
            o.write(if self.relu { t.max(0.0) } else { t });
        }
    }
}

/// The backward pass: `Σg`, `Σg·(x − μ)` with g = dy where the forward's output was > 0 (all of
/// dy without ReLU), then `dx = a·g + k·(x − μ) + b`.
struct Backward<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    mean: &'a [f32],
    var: &'a [f32],
    dims: [usize; 3],
    eps: f64,
    relu: bool,
}

impl Backward<'_> {
    /// g from dy and x in channel `ch`: the forward's affine map recomputed (same operations).
    #[inline(always)]
    fn mask(&self, ch: usize) -> Mask {
        let (m, b) = (self.mean[ch], self.beta[ch]);
        Mask { m, a: scale(self.gamma[ch], self.var[ch], self.eps), b, relu: self.relu }
    }
}

impl ChannelPass for Backward<'_> {
    /// (a, k, b) of dx, ReLU's mask (computed once per channel, not per row), and the sums
    /// (for dγ and dβ).
    type Coef = ((f32, f32, f32), Mask, (f64, f64));
    #[inline(always)]
    fn sums(&self, ch: usize) -> (f64, f64) {
        let rows = (0..self.dims[0]).map(|i| (row(self.dy, self.dims, i, ch), row(self.x, self.dims, i, ch)));
        bn_sums::grad_sums(rows, self.mask(ch), self.mean[ch] as f64)
    }
    /// dx = γ/σ · (g − mean(g) − x̂·mean(g·x̂)) = a·g + k·(x − μ) + b (x − μ kept as such:
    /// folding μ into b would cancel badly when |μ| ≫ σ).
    #[inline(always)]
    fn coef(&self, ch: usize, (sg, sgx): (f64, f64)) -> Self::Coef {
        let [n, _, s] = self.dims;
        let count = (n * s).max(1) as f64;
        let inv_std = 1.0 / (self.var[ch] as f64 + self.eps).sqrt();
        let a = self.gamma[ch] as f64 * inv_std;
        let k = -a * inv_std * inv_std * sgx / count;
        let b = -a * sg / count;
        ((a as f32, k as f32, b as f32), self.mask(ch), (sg, sgx * inv_std))
    }
    #[inline(always)]
    fn write(&self, i: usize, ch: usize, ((a, k, b), mask, _): Self::Coef, out: &mut [MaybeUninit<f32>]) {
        let m = self.mean[ch];
        let (dr, xr) = (row(self.dy, self.dims, i, ch), row(self.x, self.dims, i, ch));
        for ((o, d), v) in out.iter_mut().zip(dr).zip(xr) {
            o.write(a * mask.apply(*d, *v) + k * (v - m) + b);
        }
    }
}

/// Forward pass over `x [n, c, s]`: (y, batch mean μ, biased batch variance σ²).
pub(crate) fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dims: [usize; 3],
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (y, coefs) = run_pass(dims, &Forward { x, gamma, beta, dims, eps, relu });
    (y, coefs.iter().map(|c| c.0).collect(), coefs.iter().map(|c| c.1).collect())
}

/// Backward pass: (dx, dγ, dβ) for the output gradient `dy`, given the forward's input, γ, β
/// and statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    dy: &[f32],
    dims: [usize; 3],
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (dx, coefs) = run_pass(dims, &Backward { x, dy, gamma, beta, mean, var, dims, eps, relu });
    (dx, coefs.iter().map(|c| c.2 .1 as f32).collect(), coefs.iter().map(|c| c.2 .0 as f32).collect())
}
