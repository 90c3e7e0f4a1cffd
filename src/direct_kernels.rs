//! The SIMD kernels of [`crate::direct_conv`], written once over [`Lanes`] and compiled for
//! AVX-512 and AVX2 + FMA. Layouts (see [`crate::direct_conv`]): an image copy holds each
//! channel as a `plane` of `(h + 2)·w + 2` values (slack, zero row, the map, zero row, slack),
//! so output pixel `e` reads tap `(ky, kx)` at `e + ky·w + kx`; a vector is `N` consecutive
//! pixels of a channel (the last one of a map may be partial); lanes on the first (last) column
//! are masked off for taps `kx = 0` (`kx = 2`). The weight gradient's layouts are described at
//! [`wgrad_block`].

use crate::direct_conv::{Plan, K, KK, OB};
use crate::simd::{prefetch, Lanes};

/// Input channels ahead that the forward tile prefetches…
const PREFETCH: usize = 2;
/// … when it has at least this many input channels.
const PREFETCH_CIN: usize = 32;
/// Pixels ahead whose output-gradient vector the weight gradient prefetches.
const WGRAD_PREFETCH: usize = 8;

/// Per vector of a map (`q = 0 .. ⌈h·w / N⌉`): the masks of the taps `kx = 0` and `kx = 2`,
/// and of the lanes inside the map.
struct Masks<V: Lanes> {
    first: Vec<V::Mask>,
    last: Vec<V::Mask>,
    keep: Vec<V::Mask>,
}

impl<V: Lanes> Masks<V> {
    #[inline(always)]
    unsafe fn new(p: &Plan) -> Self {
        let (w, hw) = (p.w, p.pixels());
        let per = |q: usize, keep: &dyn Fn(usize) -> bool| V::mask(|l| keep(q * V::N + l));
        let qs = 0..hw.div_ceil(V::N);
        Self {
            first: qs.clone().map(|q| per(q, &|e| e % w != 0)).collect(),
            last: qs.clone().map(|q| per(q, &|e| e % w != w - 1)).collect(),
            keep: qs.map(|q| per(q, &|e| e < hw)).collect(),
        }
    }
}

/// One output vector of a group: offsets of its first tap in the copies and of its pixels in
/// the output (channel 0), and its masks.
#[derive(Clone, Copy)]
struct Spot<V: Lanes> {
    x: usize,
    y: usize,
    first: V::Mask,
    last: V::Mask,
    keep: V::Mask,
}

/// `y [imgs, cout, h, w]` of the copies `xp [imgs, cin, plane]`, packed weights `wk`
/// (`[cout/8][cin][9][8]`): tiles of `NV` vectors (a single vector for the rest).
#[inline(always)]
pub(crate) unsafe fn conv_group<V: Lanes, const NV: usize>(p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: *mut f32) {
    let masks = Masks::<V>::new(p);
    let (plane, hw, per_img) = (p.plane(), p.pixels(), p.pixels().div_ceil(V::N));
    // Where each vector of the group reads and writes (computed once: divisions are slow).
    let at: Vec<Spot<V>> = (0..imgs * per_img)
        .map(|u| {
            let (img, q) = (u / per_img, u % per_img);
            Spot {
                x: img * p.cin * plane + q * V::N,
                y: img * p.cout * hw + q * V::N,
                first: masks.first[q],
                last: masks.last[q],
                keep: masks.keep[q],
            }
        })
        .collect();
    for ob in 0..p.cout / OB {
        let wb = wk[ob * p.cin * KK * OB..].as_ptr();
        let yb = y.add(ob * OB * hw);
        let mut tiles = at.chunks_exact(NV);
        for spots in tiles.by_ref() {
            tile::<V, NV>(p, xp.as_ptr(), wb, spots, yb);
        }
        for spot in tiles.remainder().chunks(1) {
            tile::<V, 1>(p, xp.as_ptr(), wb, spot, yb);
        }
    }
}

/// `NV` output vectors (`spots`) of 8 output channels (weights `wb [cin][9][8]`, outputs from
/// `yb`): per input channel and tap, `NV` loads, 8 broadcast weights, `8·NV` multiply-adds.
#[inline(always)]
unsafe fn tile<V: Lanes, const NV: usize>(p: &Plan, xp: *const f32, wb: *const f32, spots: &[Spot<V>], yb: *mut f32) {
    let (plane, hw) = (p.plane(), p.pixels());
    let s: [Spot<V>; NV] = std::array::from_fn(|v| spots[v]);
    let mut acc = [[V::zero(); NV]; OB];
    for c in 0..p.cin {
        let wc = wb.add(c * KK * OB);
        if p.cin >= PREFETCH_CIN {
            let ahead = xp.wrapping_add((c + PREFETCH) * plane);
            for ky in 0..K {
                let row = ahead.wrapping_add(ky * p.w);
                for spot in &s {
                    prefetch(row.wrapping_add(spot.x));
                }
                prefetch(row.wrapping_add(s[NV - 1].x + V::N + 1));
            }
        }
        for ky in 0..K {
            let row = xp.add(c * plane + ky * p.w);
            let taps: [[V; NV]; K] = [
                std::array::from_fn(|v| V::load_masked(row.add(s[v].x), s[v].first)),
                std::array::from_fn(|v| V::load(row.add(s[v].x + 1))),
                std::array::from_fn(|v| V::load_masked(row.add(s[v].x + 2), s[v].last)),
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
    for (v, spot) in s.iter().enumerate() {
        for (j, accj) in acc.iter().enumerate() {
            accj[v].store_masked(yb.add(spot.y + j * hw), spot.keep);
        }
    }
}

/// One task of the weight gradient: output channels `N·ob .. N·ob + N` (the lanes) × input
/// channels `c0 .. c0 + cn` over a chunk of `imgs` images (buffers as in [`wgrad_block`]).
#[derive(Clone, Copy)]
pub(crate) struct WgradJob<'a> {
    pub(crate) p: &'a Plan,
    pub(crate) imgs: usize,
    pub(crate) xw: &'a [f32],
    pub(crate) dyt: &'a [f32],
    pub(crate) ob: usize,
    pub(crate) c0: usize,
    pub(crate) cn: usize,
}

/// Pixels per pass of a task over its input channels: the output gradients of a pass (`N`
/// values per pixel, 16 KB with AVX-512) stay in L1 while every input channel reads them.
const WGRAD_PASS: usize = 256;

/// A task ([`WgradJob`]): its input channels in blocks of `CB` (then one at a time), pass by
/// pass over [`WGRAD_PASS`] pixels, the accumulators kept in `part [cn][9][N]` between passes.
/// Each accumulator sees the pixels in order, so the result does not depend on the pass length.
#[inline(always)]
pub(crate) unsafe fn wgrad_task<V: Lanes, const CB: usize>(job: &WgradJob, part: &mut [f32]) {
    let total = job.imgs * job.p.pixels();
    let whole = job.cn / CB * CB;
    for q0 in (0..total).step_by(WGRAD_PASS) {
        let q1 = total.min(q0 + WGRAD_PASS);
        for c in (0..whole).step_by(CB) {
            wgrad_block::<V, CB>(job, job.c0 + c, q0..q1, &mut part[c * KK * V::N..]);
        }
        for c in whole..job.cn {
            wgrad_block::<V, 1>(job, job.c0 + c, q0..q1, &mut part[c * KK * V::N..]);
        }
    }
}

/// The weight gradient of one block — output channels `N·ob .. N·ob + N` (the lanes) × input
/// channels `c0 .. c0 + CB` — over the pixels `q` of a chunk of images, added to `acc [CB][9][N]`.
/// Inputs: zero-bordered copies `xw [cin][imgs][(h+2)·(w+2)]` (so every tap of every pixel is
/// in the copy, no masks) and the output gradients transposed to `dyt [cout/N][imgs][h·w][N]`.
/// Per pixel: one vector of `N` output-channel gradients, and for each of the `9·CB` taps one
/// input value broadcast (folded into the multiply-add): `9·CB` accumulators, no lane sums.
#[inline(always)]
unsafe fn wgrad_block<V: Lanes, const CB: usize>(
    job: &WgradJob,
    c0: usize,
    q: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    let WgradJob { p, imgs, xw, dyt, ob, .. } = *job;
    let (pitch, plane, hw) = (p.bordered_pitch(), p.bordered_plane(), p.pixels());
    let rows: [[*const f32; K]; CB] =
        std::array::from_fn(|j| std::array::from_fn(|ky| xw.as_ptr().add((c0 + j) * imgs * plane + ky * pitch)));
    let mut d = dyt[(ob * imgs * hw + q.start) * V::N..].as_ptr();
    let mem = acc.as_mut_ptr();
    let mut a: [[V; KK]; CB] = std::array::from_fn(|j| std::array::from_fn(|t| V::load(mem.add((j * KK + t) * V::N))));
    // One flat loop over the pixels (nested loops made the compiler keep the accumulators in
    // memory); `off` is the pixel's top-left tap in its channel's copies.
    let (img, rem) = (q.start / hw, q.start % hw);
    let (mut y, mut x) = (rem / p.w, rem % p.w);
    let mut off = img * plane + y * pitch + x;
    for _ in q {
        prefetch(d.wrapping_add(WGRAD_PREFETCH * V::N));
        let dv = V::load(d);
        for (j, aj) in a.iter_mut().enumerate() {
            for ky in 0..K {
                let r = rows[j][ky].add(off);
                for kx in 0..K {
                    aj[ky * K + kx] = V::fma(V::splat(r.add(kx)), dv, aj[ky * K + kx]);
                }
            }
        }
        (d, off, x) = (d.add(V::N), off + 1, x + 1);
        if x == p.w {
            (off, x, y) = (off + 2, 0, y + 1);
            if y == p.h {
                (off, y) = (off + 2 * pitch, 0);
            }
        }
    }
    for (j, aj) in a.iter().enumerate() {
        for (t, v) in aj.iter().enumerate() {
            v.store(mem.add((j * KK + t) * V::N));
        }
    }
}

/// The kernels compiled for each instruction set. AVX-512 needs VL and DQ besides F: without
/// them the compiler cannot zero registers 16–31 and spilled accumulators.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{conv_group, wgrad_task, Plan, WgradJob};
    use crate::simd::{V16, V8};

    #[target_feature(enable = "avx512f,avx512vl,avx512dq")]
    pub(crate) unsafe fn conv_group_512(p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: *mut f32) {
        conv_group::<V16, 3>(p, imgs, xp, wk, y)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn conv_group_256(p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: *mut f32) {
        conv_group::<V8, 1>(p, imgs, xp, wk, y)
    }
    #[target_feature(enable = "avx512f,avx512vl,avx512dq")]
    pub(crate) unsafe fn wgrad_512(job: &WgradJob, part: &mut [f32]) {
        wgrad_task::<V16, 3>(job, part)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn wgrad_256(job: &WgradJob, part: &mut [f32]) {
        wgrad_task::<V8, 1>(job, part)
    }
}
