//! Direct convolution kernels for the 3×3, stride-1, padding-1 convolutions of a ResNet (the
//! "same" convolutions of every residual block): forward, input gradient and weight gradient
//! without a column matrix, for maps whose pixel count is a whole number of SIMD vectors.
//!
//! im2col + GEMM (src/conv.rs) writes and rereads nine copies of the input per pass, and with
//! 16–64 channels its GEMMs are short; on a CIFAR ResNet-18 of width 16 the unfolding took as
//! long as the multiplications. Here each image is copied once with a zero row above and below
//! each channel, and a vector is `N` consecutive output pixels of a channel in row-major order
//! (part of a row, or several whole rows of a narrow map). Output pixel `e` reads tap
//! `(ky, kx)` at `e + ky·w + kx` of the copy; lanes whose column is the first (tap `kx = 0`) or
//! the last (`kx = 2`) read the horizontal padding and are masked to zero. So every tap of a
//! vector is one (masked) load:
//! - forward: a register tile of 8 output channels × `NV` vectors (of one image or, for maps
//!   of a vector or two, of several); per input channel and tap, `NV` loads, 8 broadcast
//!   weights, `8·NV` fused multiply-adds;
//! - input gradient: the same kernel on the output gradient, with the weight transposed and
//!   its taps reversed (`dx = dy ⊛ rot180(W)ᵀ`, again padding 1);
//! - weight gradient: per output channel pair and input channel, 2 × 9 vector accumulators of
//!   `Σ dy[o][y][x] · x[c][y+ky−1][x+kx−1]` over all pixels of a fixed chunk of images, summed
//!   across lanes, then the chunks in order.
//!
//! Every output element is one fixed sequence of operations whatever the thread count, so runs
//! stay bit-reproducible (on one kind of processor: AVX-512 and AVX2 sum in different lanes).
//! Results agree with burn's convolution to float32 rounding (tests/conv_kernels.rs).

use rayon::prelude::*;

use crate::conv::ConvGeom;
use crate::simd::{self, Isa, Lanes};

const K: usize = 3;
const KK: usize = K * K;
/// Output channels per register tile (forward and input gradient).
const OB: usize = 8;
/// Images per partial sum of the weight gradient (fixed, so the order never depends on threads).
const WGRAD_CHUNK: usize = 8;

/// Whether the direct kernels compute this convolution on this machine (3×3, stride 1,
/// padding 1, `h·w` a multiple of the vector length, output channels a multiple of 8).
pub fn applies(g: &ConvGeom) -> bool {
    simd::isa().is_some_and(|isa| eligible(g, isa))
}

fn eligible(g: &ConvGeom, isa: Isa) -> bool {
    let pixels = g.h * g.w;
    g.k == K
        && g.stride == 1
        && g.pad == 1
        && g.n > 0
        && pixels > 0
        && pixels.is_multiple_of(isa.lanes())
        && g.o.is_multiple_of(OB)
}

/// One image's 3×3 "same" convolution `[cin, h, w]` → `[cout, h, w]`.
#[derive(Clone, Copy)]
struct Plan {
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
}

impl Plan {
    fn pixels(&self) -> usize {
        self.h * self.w
    }
    /// One channel of the copy: a slack element, a zero row, the map, a zero row, a slack
    /// element (masked lanes of the first and last taps read the slack).
    fn plane(&self) -> usize {
        (self.h + 2) * self.w + 2
    }
    fn in_len(&self) -> usize {
        self.cin * self.pixels()
    }
    fn out_len(&self) -> usize {
        self.cout * self.pixels()
    }
}

/// Appends the copies ([`Plan::plane`]) of the channels of the images `x [imgs, cin, h, w]`.
fn pad_images(p: &Plan, x: &[f32], xp: &mut Vec<f32>) {
    let (hw, plane) = (p.pixels(), p.plane());
    let start = xp.len();
    xp.resize(start + x.len() / hw * plane, 0.0);
    for (chan, src) in x.chunks_exact(hw).enumerate() {
        xp[start + chan * plane + 1 + p.w..][..hw].copy_from_slice(src);
    }
}

/// Per vector position in a row pattern (`q mod period`), the masks of the taps `kx = 0` (drop
/// the first column) and `kx = 2` (drop the last).
struct Masks<V: Lanes> {
    period: usize,
    first: Vec<V::Mask>,
    last: Vec<V::Mask>,
}

impl<V: Lanes> Masks<V> {
    #[inline(always)]
    unsafe fn new(w: usize) -> Self {
        let period = w / gcd(w, V::N);
        let col = |q: usize, l: usize| (q * V::N + l) % w;
        let first = (0..period).map(|q| V::mask(|l| col(q, l) != 0)).collect();
        let last = (0..period).map(|q| V::mask(|l| col(q, l) != w - 1)).collect();
        Self { period, first, last }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Weights `[cout/8][cin][9][8]` from `at(o, c, tap)`: the 8 weights a tile broadcasts in turn
/// lie side by side.
fn pack(cout: usize, cin: usize, at: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(cout * cin * KK);
    for ob in 0..cout / OB {
        for c in 0..cin {
            for t in 0..KK {
                out.extend((0..OB).map(|j| at(ob * OB + j, c, t)));
            }
        }
    }
    out
}

/// Forward: `y [n, o, h, w] = x ⊛ weight`, or `None` where [`applies`] says no.
pub fn forward(g: &ConvGeom, x: &[f32], weight: &[f32]) -> Option<Vec<f32>> {
    let isa = simd::isa().filter(|&isa| eligible(g, isa))?;
    let wk = pack(g.o, g.c, |o, c, t| weight[(o * g.c + c) * KK + t]);
    Some(convolve(isa, &Plan { cin: g.c, h: g.h, w: g.w, cout: g.o }, g.n, x, &wk))
}

/// Input gradient: `dx [n, c, h, w] = dy ⊛ rot180(weight)ᵀ`, or `None`.
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32]) -> Option<Vec<f32>> {
    let isa = simd::isa().filter(|&isa| eligible(g, isa) && g.c.is_multiple_of(OB))?;
    let wk = pack(g.c, g.o, |c, o, t| weight[(o * g.c + c) * KK + KK - 1 - t]);
    Some(convolve(isa, &Plan { cin: g.o, h: g.h, w: g.w, cout: g.c }, g.n, dy, &wk))
}

/// Weight gradient `[o, c, 3, 3]`, or `None`. The images go in fixed chunks (at least 8, and
/// at least 64 vectors per channel, so small maps do not spend their time summing lanes); the
/// blocks of 8 output channels of a chunk run in parallel.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let isa = simd::isa().filter(|&isa| eligible(g, isa))?;
    let p = Plan { cin: g.c, h: g.h, w: g.w, cout: g.o };
    let hw = p.pixels();
    let chunk = 64usize.div_ceil(hw / isa.lanes()).max(WGRAD_CHUNK).min(g.n);
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(chunk))
        .into_par_iter()
        .map(|ch| {
            let (first, imgs) = (ch * chunk, chunk.min(g.n - ch * chunk));
            // Channel-major copies `[channel][image][…]`: one channel of every image of the
            // chunk lies in one run.
            let plane = p.plane();
            let mut xps = vec![0.0f32; p.cin * imgs * plane];
            xps.par_chunks_mut(imgs * plane).enumerate().for_each(|(c, run)| {
                for (i, dst) in run.chunks_exact_mut(plane).enumerate() {
                    dst[1 + p.w..][..hw].copy_from_slice(&x[((first + i) * p.cin + c) * hw..][..hw]);
                }
            });
            let mut dys = vec![0.0f32; p.cout * imgs * hw];
            dys.par_chunks_mut(imgs * hw).enumerate().for_each(|(o, run)| {
                for (i, dst) in run.chunks_exact_mut(hw).enumerate() {
                    dst.copy_from_slice(&dy[((first + i) * p.cout + o) * hw..][..hw]);
                }
            });
            let blocks: Vec<Vec<f32>> = (0..p.cout / OB)
                .into_par_iter()
                .map(|b| {
                    let mut part = vec![0.0f32; OB * p.cin * KK];
                    // SAFETY: `isa` was detected on this processor; the buffers have the plan's sizes.
                    unsafe { wgrad_chunk_isa(isa, &p, imgs, &xps, &dys, b * OB, &mut part) };
                    part
                })
                .collect();
            blocks.concat()
        })
        .collect();
    let mut sum = vec![0.0f32; g.o * g.c * KK];
    for part in &partials {
        for (s, v) in sum.iter_mut().zip(part) {
            *s += *v;
        }
    }
    Some(sum)
}

/// Runs the tiled kernel over a batch, a few images per task: enough that a task has ≥ 24
/// vectors per channel (maps of one or two vectors tile across images), at most 8.
fn convolve(isa: Isa, p: &Plan, n: usize, x: &[f32], wk: &[f32]) -> Vec<f32> {
    let group = (24 / (p.pixels() / isa.lanes())).clamp(1, 8);
    let mut y = vec![0.0f32; n * p.out_len()];
    y.par_chunks_mut(group * p.out_len()).zip(x.par_chunks(group * p.in_len())).for_each_init(
        Vec::new,
        |xp, (yg, xg)| {
            xp.clear();
            pad_images(p, xg, xp);
            // SAFETY: `isa` was detected on this processor; the buffers have the plan's sizes.
            unsafe { conv_group_isa(isa, p, yg.len() / p.out_len(), xp, wk, yg) };
        },
    );
    y
}

unsafe fn conv_group_isa(isa: Isa, p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => x86::conv_group_512(p, imgs, xp, wk, y),
        Isa::Avx2 => x86::conv_group_256(p, imgs, xp, wk, y),
    }
}

unsafe fn wgrad_chunk_isa(isa: Isa, p: &Plan, imgs: usize, xps: &[f32], dys: &[f32], o0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => x86::wgrad_chunk_512(p, imgs, xps, dys, o0, out),
        Isa::Avx2 => x86::wgrad_chunk_256(p, imgs, xps, dys, o0, out),
    }
}

/// The kernels compiled for each instruction set. AVX-512 needs VL and DQ besides F: without
/// them the compiler cannot zero registers 16–31 and spilled accumulators.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{conv_group, wgrad_chunk, Plan};
    use crate::simd::{V16, V8};

    #[target_feature(enable = "avx512f,avx512vl,avx512dq")]
    pub(super) unsafe fn conv_group_512(p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: &mut [f32]) {
        conv_group::<V16, 3>(p, imgs, xp, wk, y)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn conv_group_256(p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: &mut [f32]) {
        conv_group::<V8, 1>(p, imgs, xp, wk, y)
    }
    #[target_feature(enable = "avx512f,avx512vl,avx512dq")]
    pub(super) unsafe fn wgrad_chunk_512(p: &Plan, imgs: usize, xps: &[f32], dys: &[f32], o0: usize, out: &mut [f32]) {
        wgrad_chunk::<V16, 2>(p, imgs, xps, dys, o0, out)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn wgrad_chunk_256(p: &Plan, imgs: usize, xps: &[f32], dys: &[f32], o0: usize, out: &mut [f32]) {
        wgrad_chunk::<V8, 1>(p, imgs, xps, dys, o0, out)
    }
}

/// `y [imgs, cout, h, w]` of the copies `xp [imgs, cin, plane]` ([`pad_images`]), packed
/// weights `wk` ([`pack`]): tiles of `NV` vectors (a single vector for the rest).
#[inline(always)]
unsafe fn conv_group<V: Lanes, const NV: usize>(p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: &mut [f32]) {
    let masks = Masks::<V>::new(p.w);
    let total = imgs * p.pixels() / V::N;
    for ob in 0..p.cout / OB {
        let wb = wk[ob * p.cin * KK * OB..].as_ptr();
        let mut u = 0;
        while u + NV <= total {
            tile::<V, NV>(p, xp.as_ptr(), wb, &masks, u, ob, y.as_mut_ptr());
            u += NV;
        }
        while u < total {
            tile::<V, 1>(p, xp.as_ptr(), wb, &masks, u, ob, y.as_mut_ptr());
            u += 1;
        }
    }
}

/// Vectors `u0 .. u0 + NV` (numbered across the images of the group) of output channels
/// `8·ob .. 8·ob + 8`; weights `wb [cin][9][8]`.
#[inline(always)]
unsafe fn tile<V: Lanes, const NV: usize>(
    p: &Plan,
    xp: *const f32,
    wb: *const f32,
    masks: &Masks<V>,
    u0: usize,
    ob: usize,
    y: *mut f32,
) {
    let (plane, hw, per_img) = (p.plane(), p.pixels(), p.pixels() / V::N);
    let at = |v: usize| ((u0 + v) / per_img, (u0 + v) % per_img);
    let xo: [usize; NV] = std::array::from_fn(|v| at(v).0 * p.cin * plane + at(v).1 * V::N);
    let first: [V::Mask; NV] = std::array::from_fn(|v| masks.first[at(v).1 % masks.period]);
    let last: [V::Mask; NV] = std::array::from_fn(|v| masks.last[at(v).1 % masks.period]);
    let mut acc = [[V::zero(); NV]; OB];
    for c in 0..p.cin {
        let wc = wb.add(c * KK * OB);
        for ky in 0..K {
            let row = xp.add(c * plane + ky * p.w);
            let taps: [[V; NV]; K] = [
                std::array::from_fn(|v| V::load_masked(row.add(xo[v]), first[v])),
                std::array::from_fn(|v| V::load(row.add(xo[v] + 1))),
                std::array::from_fn(|v| V::load_masked(row.add(xo[v] + 2), last[v])),
            ];
            for (kx, xv) in taps.iter().enumerate() {
                let wt = wc.add((ky * K + kx) * OB);
                for (j, accj) in acc.iter_mut().enumerate() {
                    let wv = V::splat(wt.add(j));
                    for (a, &x) in accj.iter_mut().zip(xv) {
                        *a = V::fma(wv, x, *a);
                    }
                }
            }
        }
    }
    for (v, &(img, q)) in std::array::from_fn::<_, NV, _>(at).iter().enumerate() {
        let out = y.add((img * p.cout + ob * OB) * hw + q * V::N);
        for (j, accj) in acc.iter().enumerate() {
            accj[v].store(out.add(j * hw));
        }
    }
}

/// The weight gradient `out [o0 .. o0 + 8][c][9]` of a chunk of images, from channel-major
/// copies `xps [cin][imgs][plane]` and output gradients `dys [cout][imgs][h·w]`: per block of
/// `OW` output channels × one input channel, 9·OW vector accumulators run over every pixel of
/// every image (one flat loop), then each is summed across its lanes.
#[inline(always)]
unsafe fn wgrad_chunk<V: Lanes, const OW: usize>(
    p: &Plan,
    imgs: usize,
    xps: &[f32],
    dys: &[f32],
    o0: usize,
    out: &mut [f32],
) {
    let masks = Masks::<V>::new(p.w);
    let (plane, hw, per_img) = (p.plane(), p.pixels(), p.pixels() / V::N);
    for ob in o0 / OW..(o0 + OB) / OW {
        for c in 0..p.cin {
            let mut a = [[V::zero(); KK]; OW];
            let xc = xps[c * imgs * plane..].as_ptr();
            let (dyb, dstride) = (dys[ob * OW * imgs * hw..].as_ptr(), imgs * hw);
            let (mut xo, mut e, mut q, mut col) = (0usize, 0usize, 0usize, 0usize);
            for _ in 0..imgs * per_img {
                let d: [V; OW] = std::array::from_fn(|j| V::load(dyb.add(j * dstride + e)));
                let (first, last) = (masks.first[col], masks.last[col]);
                for ky in 0..K {
                    let row = xc.add(xo + ky * p.w);
                    let taps = [V::load_masked(row, first), V::load(row.add(1)), V::load_masked(row.add(2), last)];
                    for (kx, &xv) in taps.iter().enumerate() {
                        for (aj, &dj) in a.iter_mut().zip(&d) {
                            aj[ky * K + kx] = V::fma(dj, xv, aj[ky * K + kx]);
                        }
                    }
                }
                (xo, e, q, col) = (xo + V::N, e + V::N, q + 1, col + 1);
                if col == masks.period {
                    col = 0;
                }
                if q == per_img {
                    // Next image: skip the zero rows and slack of this copy.
                    (xo, q, col) = (xo + plane - hw, 0, 0);
                }
            }
            for (j, aj) in a.iter().enumerate() {
                for (t, v) in aj.iter().enumerate() {
                    out[((ob * OW + j - o0) * p.cin + c) * KK + t] = v.sum();
                }
            }
        }
    }
}
