//! Direct convolution for the 3×3, stride-1, padding-1 convolutions of a ResNet (the "same"
//! convolutions of every residual block): forward, input gradient and weight gradient without a
//! column matrix. The SIMD kernels are in [`crate::direct_kernels`].
//!
//! im2col + GEMM (src/conv.rs) writes and rereads nine copies of the input per pass, and with
//! 16–64 channels its GEMMs are short; on a CIFAR ResNet-18 of width 16 the unfolding took as
//! long as the multiplications. Here each image is copied once with a zero row above and below
//! each channel, and a vector is `N` consecutive output pixels of a channel in row-major order
//! (part of a row, or several whole rows of a narrow map; the last vector of a map may be
//! partial). Output pixel `e` reads tap `(ky, kx)` at `e + ky·w + kx` of the copy; lanes whose
//! column is the first (tap `kx = 0`) or the last (`kx = 2`) read the horizontal padding and are
//! masked to zero. So every tap of a vector is one (masked) load:
//! - forward: a register tile of 8 output channels × `NV` vectors (of one image or, for small
//!   maps, of several); per input channel and tap, `NV` loads, 8 broadcast weights, `8·NV` fused
//!   multiply-adds;
//! - input gradient: the same kernel on the output gradient, with the weight transposed and
//!   its taps reversed (`dx = dy ⊛ rot180(W)ᵀ`, again padding 1);
//! - weight gradient `Σ dy[o][y][x] · x[c][y+ky−1][x+kx−1]`: the other way round — the lanes
//!   are `N` output channels (the output gradients transposed to channels-innermost), each
//!   input value is broadcast, and a block of 3 input channels × 9 taps keeps 27 accumulators
//!   over every pixel of a fixed chunk of images (zero-bordered copies: no masks, no sums
//!   across lanes), a task's blocks taking the pixels in passes of 256 so that a pass's output
//!   gradients stay in L1; the chunks' partial sums are added in order. (Pixels in the lanes,
//!   as in the forward pass, needed 9 unaligned loads per 18 multiply-adds and was half as fast.)
//!
//! The kernels prefetch what they read next (the input channel two ahead, the output-gradient
//! vector eight pixels ahead): they wait on memory more than on their arithmetic.
//!
//! Every output element is one fixed sequence of operations whatever the thread count, so runs
//! stay bit-reproducible (on one kind of processor: AVX-512 and AVX2 sum in different lanes).
//! Results agree with burn's convolution to float32 rounding (tests/conv_kernels.rs).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::conv::ConvGeom;
use crate::cpu_ops::{filled, TASK_ELEMENTS};
use crate::direct_kernels::{self, WgradJob};
use crate::simd::{self, Isa};

pub(crate) const K: usize = 3;
pub(crate) const KK: usize = K * K;
/// Output channels per register tile (forward and input gradient).
pub(crate) const OB: usize = 8;
/// Zeros after the last copy of a buffer: a partial last vector reads up to `N − 1` past it.
const SLACK: usize = 16;
/// Images per partial sum of the weight gradient at least (fixed, so the order never depends on
/// threads)…
const WGRAD_CHUNK: usize = 8;
/// … and pixels per partial sum at least (small maps: enough work per block).
const WGRAD_PIXELS: usize = 1024;
/// Blocks of input channels per weight-gradient task (they share each pass's output gradients).
const WGRAD_TASK_BLOCKS: usize = 8;

/// Whether the direct kernels compute this convolution on this machine (3×3, stride 1,
/// padding 1, output channels a multiple of 8, and the map fills at least half of its vectors:
/// 4×4, 7×7, 8×8, 32×32 … but not 2×2 or 1×1, which im2col + GEMM does better).
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
        && 2 * pixels >= pixels.div_ceil(isa.lanes()) * isa.lanes()
        && g.o.is_multiple_of(OB)
}

/// One image's 3×3 "same" convolution `[cin, h, w]` → `[cout, h, w]`.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
}

impl Plan {
    pub(crate) fn pixels(&self) -> usize {
        self.h * self.w
    }
    /// One channel of the copy: a slack element, a zero row, the map, a zero row, a slack
    /// element (masked lanes of the first and last taps read the slack).
    pub(crate) fn plane(&self) -> usize {
        (self.h + 2) * self.w + 2
    }
    /// Row length of the weight gradient's copies, zero-bordered on all four sides.
    pub(crate) fn bordered_pitch(&self) -> usize {
        self.w + 2
    }
    /// One channel of the weight gradient's copies: `(h + 2) × (w + 2)`.
    pub(crate) fn bordered_plane(&self) -> usize {
        (self.h + 2) * self.bordered_pitch()
    }
    fn in_len(&self) -> usize {
        self.cin * self.pixels()
    }
    fn out_len(&self) -> usize {
        self.cout * self.pixels()
    }
}

/// Appends the copies ([`Plan::plane`]) of the channels of the images `x [imgs, cin, h, w]`.
/// The buffer must end with [`SLACK`] zeros (the last, partial vector of the last map reads
/// past its plane).
fn pad_images(p: &Plan, x: &[f32], xp: &mut Vec<f32>) {
    let (hw, plane) = (p.pixels(), p.plane());
    let start = xp.len();
    xp.resize(start + x.len() / hw * plane, 0.0);
    for (chan, src) in x.chunks_exact(hw).enumerate() {
        xp[start + chan * plane + 1 + p.w..][..hw].copy_from_slice(src);
    }
}

/// Weights `[cout/8][cin][9][8]` from `at(o, c, tap)`: the 8 weights a tile broadcasts in turn
/// lie side by side.
/// Blocks of output channels in parallel (a 512 × 512 weight is 9 MB).
fn pack(cout: usize, cin: usize, at: impl Fn(usize, usize, usize) -> f32 + Sync) -> Vec<f32> {
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(cin * KK * OB).enumerate().for_each(|(ob, block)| {
            for (ct, taps) in block.chunks_exact_mut(OB).enumerate() {
                for (j, v) in taps.iter_mut().enumerate() {
                    v.write(at(ob * OB + j, ct / KK, ct % KK));
                }
            }
        });
    };
    // SAFETY: every block is written in full.
    unsafe { filled(cout * cin * KK, fill) }
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

/// Weight gradient `[o, c, 3, 3]`, or `None` (also when the output channels are not a multiple
/// of the vector length). The images go in fixed chunks (8, or enough for 1024 pixels); the
/// tasks of a chunk (a vector of output channels × up to 8 blocks of 3 input channels) run in
/// parallel; the chunks' partial sums are added in order.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let isa = simd::isa().filter(|&isa| eligible(g, isa) && g.o.is_multiple_of(isa.lanes()))?;
    let p = Plan { cin: g.c, h: g.h, w: g.w, cout: g.o };
    let (hw, lanes) = (p.pixels(), isa.lanes());
    let chunk = WGRAD_CHUNK.max(WGRAD_PIXELS.div_ceil(hw)).min(g.n);
    let (pitch, plane) = (p.bordered_pitch(), p.bordered_plane());
    // (output-channel vector, first input channel, input channels) of each task: blocks of 3
    // input channels with AVX-512 (one with AVX2), up to `WGRAD_TASK_BLOCKS` of them per task.
    let cb = if isa == Isa::Avx512 { 3 } else { 1 };
    let span = cb * WGRAD_TASK_BLOCKS;
    let blocks: Vec<(usize, usize, usize)> = (0..p.cout / lanes)
        .flat_map(|ob| (0..p.cin).step_by(span).map(move |c0| (ob, c0, span.min(p.cin - c0))))
        .collect();
    let partials: Vec<Vec<f32>> = (0..g.n.div_ceil(chunk))
        .into_par_iter()
        .map(|ch| {
            let (first, imgs) = (ch * chunk, chunk.min(g.n - ch * chunk));
            // Zero-bordered copies `[channel][image][(h+2)·(w+2)]` (every tap inside them),
            // written once (borders and map) rather than zeroed and then copied into.
            let border = |xw: &mut [MaybeUninit<f32>]| {
                xw.par_chunks_mut(imgs * plane).enumerate().for_each(|(c, run)| {
                    for (i, dst) in run.chunks_exact_mut(plane).enumerate() {
                        let src = &x[((first + i) * p.cin + c) * hw..][..hw];
                        let (top, rest) = dst.split_at_mut(pitch);
                        let (map, bottom) = rest.split_at_mut(p.h * pitch);
                        for v in top.iter_mut().chain(bottom.iter_mut()) {
                            v.write(0.0);
                        }
                        for (row, s) in map.chunks_exact_mut(pitch).zip(src.chunks_exact(p.w)) {
                            row[0].write(0.0);
                            row[pitch - 1].write(0.0);
                            for (d, v) in row[1..pitch - 1].iter_mut().zip(s) {
                                d.write(*v);
                            }
                        }
                    }
                });
            };
            // SAFETY: every element of every plane is written (border rows, border columns, map).
            let xw = unsafe { filled(p.cin * imgs * plane, border) };
            // Output gradients with the channels innermost: `[cout/N][image][h·w][N]`.
            let transpose = |t: &mut [MaybeUninit<f32>]| {
                t.par_chunks_mut(imgs * hw * lanes).enumerate().for_each(|(ob, run)| {
                    for (i, img) in run.chunks_exact_mut(hw * lanes).enumerate() {
                        let src = &dy[((first + i) * p.cout + ob * lanes) * hw..][..lanes * hw];
                        // In blocks of 64 pixels, a channel at a time: the channels' rows are
                        // 4 KB apart (32×32 maps) and read side by side they evict each other.
                        for (b, block) in img.chunks_mut(64 * lanes).enumerate() {
                            for (l, row) in src.chunks_exact(hw).enumerate() {
                                for (k, v) in row[b * 64..].iter().take(block.len() / lanes).enumerate() {
                                    block[k * lanes + l].write(*v);
                                }
                            }
                        }
                    }
                });
            };
            // SAFETY: every element of every run is written.
            let dyt = unsafe { filled(p.cout * imgs * hw, transpose) };
            let parts: Vec<Vec<f32>> = blocks
                .par_iter()
                .map(|&(ob, c0, cn)| {
                    let mut part = vec![0.0f32; cn * KK * lanes];
                    let job = WgradJob { p: &p, imgs, xw: &xw, dyt: &dyt, ob, c0, cn };
                    // SAFETY: `isa` was detected on this processor; the buffers have the plan's sizes.
                    unsafe { wgrad_isa(isa, &job, &mut part) };
                    part
                })
                .collect();
            // `[task][channel][tap][lane]` → `[o][c][tap]`, output channels in parallel (the
            // tasks of an output-channel vector are consecutive and cover every input channel).
            let per_ob = p.cin.div_ceil(span);
            let gather = |out: &mut [MaybeUninit<f32>]| {
                out.par_chunks_mut(p.cin * KK).enumerate().for_each(|(o, row)| {
                    let (ob, l) = (o / lanes, o % lanes);
                    let tasks = blocks[ob * per_ob..][..per_ob].iter().zip(&parts[ob * per_ob..]);
                    for (&(_, c0, cn), part) in tasks {
                        for (jt, v) in row[c0 * KK..][..cn * KK].iter_mut().enumerate() {
                            v.write(part[jt * lanes + l]);
                        }
                    }
                });
            };
            // SAFETY: every row gets all of its input channels' taps.
            unsafe { filled(p.cout * p.cin * KK, gather) }
        })
        .collect();
    // The chunks' partial sums, added in chunk order (in parallel over the elements).
    let mut partials = partials.into_iter();
    let mut sum = partials.next()?;
    let rest: Vec<Vec<f32>> = partials.collect();
    if !rest.is_empty() {
        sum.par_chunks_mut(TASK_ELEMENTS).enumerate().for_each(|(i, s)| {
            for part in &rest {
                for (a, b) in s.iter_mut().zip(&part[i * TASK_ELEMENTS..]) {
                    *a += *b;
                }
            }
        });
    }
    Some(sum)
}

/// Runs the tiled kernel over a batch, a few images per task: enough that a task has ≥ 24
/// vectors per channel (maps of one or two vectors tile across images), at most 8.
fn convolve(isa: Isa, p: &Plan, n: usize, x: &[f32], wk: &[f32]) -> Vec<f32> {
    let group = (24 / p.pixels().div_ceil(isa.lanes())).clamp(1, 8);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(group * p.out_len()).zip(x.par_chunks(group * p.in_len())).for_each_init(
            Vec::new,
            |xp, (yg, xg)| {
                xp.clear();
                pad_images(p, xg, xp);
                xp.resize(xp.len() + SLACK, 0.0);
                // SAFETY: `isa` was detected on this processor; the buffers have the plan's sizes.
                unsafe { conv_group_isa(isa, p, yg.len() / p.out_len(), xp, wk, yg.as_mut_ptr().cast()) };
            },
        );
    };
    // SAFETY: the tiles store every pixel of every output channel of every image.
    unsafe { filled(n * p.out_len(), fill) }
}

unsafe fn conv_group_isa(isa: Isa, p: &Plan, imgs: usize, xp: &[f32], wk: &[f32], y: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => direct_kernels::x86::conv_group_512(p, imgs, xp, wk, y),
        Isa::Avx2 => direct_kernels::x86::conv_group_256(p, imgs, xp, wk, y),
    }
}

unsafe fn wgrad_isa(isa: Isa, job: &WgradJob, part: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => direct_kernels::x86::wgrad_512(job, part),
        Isa::Avx2 => direct_kernels::x86::wgrad_256(job, part),
    }
}
