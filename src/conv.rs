//! CPU convolution kernels (f32, NCHW) for the flex backend: im2col + GEMM (the `gemm` crate),
//! forward, input gradient and weight gradient, parallel over the images of the batch.
//!
//! burn-flex 0.22.1's own `conv2d` reaches 4–20 GFLOP/s on the small-channel layers of a CIFAR
//! ResNet on this project's 2-core machine (BENCHMARKS.md); ResNet convolutions are dense 3×3/1×1
//! kernels over few channels, where one GEMM per image `W[O, C·k·k] · cols[C·k·k, OH·OW]` runs
//! several times faster. The arithmetic is the textbook one (PyTorch's `slow_conv2d` does the
//! same on CPU); results agree with burn's convolution to float32 rounding
//! (tests/conv_kernels.rs).
//!
//! Determinism: every output element is produced by one fixed sequence of operations, independent
//! of the number of threads — the weight gradient sums images in fixed chunks, then the chunks in
//! order — so training runs are bit-reproducible (bit-exact resume relies on it).

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::dense::{gemm_into, MatRef};

/// Kernel calls so far (forward, input gradient, weight gradient), for tests that check which
/// convolution path a graph took.
static CALLS: [AtomicUsize; 3] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

/// Multiply-adds done by the kernels so far (all three passes), for FLOP accounting in benchmarks.
static MACS: AtomicUsize = AtomicUsize::new(0);

/// Multiply-adds done by the convolution kernels so far in this process.
pub fn macs() -> usize {
    MACS.load(Ordering::Relaxed)
}

/// Calls so far of [`forward`], [`backward_input`] and [`backward_weight`], in this process.
pub fn calls() -> [usize; 3] {
    [0, 1, 2].map(|i| CALLS[i].load(Ordering::Relaxed))
}

/// Shapes of one 2-D convolution (square kernel, symmetric padding, no dilation, one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Images per weight-gradient partial sum (fixed, so the summation order never depends on threads).
const WGRAD_CHUNK: usize = 8;

impl ConvGeom {
    /// Geometry of `x [n, c, h, w] ⊛ weight [o, c, k, k]`; `None` when the output would be empty.
    pub fn new(x: [usize; 4], weight: [usize; 4], stride: usize, pad: usize) -> Option<Self> {
        let [n, c, h, w] = x;
        let [o, wc, k, k2] = weight;
        if wc != c || k != k2 || stride == 0 || k == 0 || h + 2 * pad < k || w + 2 * pad < k {
            return None;
        }
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        Some(Self { n, c, h, w, o, k, stride, pad, oh, ow })
    }
    /// Rows of the column matrix: C·k·k.
    pub fn rows(&self) -> usize {
        self.c * self.k * self.k
    }
    /// Output pixels per image: OH·OW.
    pub fn pixels(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1×1, stride-1, unpadded convolution reads the image itself as its column matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.o * self.pixels()
    }
    /// Multiply-adds of the forward pass (the input and weight gradients cost the same each).
    pub fn macs(&self) -> usize {
        self.n * self.out_len() * self.rows()
    }
}

/// Output positions `o` with `0 <= o·stride + tap − pad < len`.
fn valid_range(out: usize, len: usize, stride: usize, pad: usize, tap: usize) -> (usize, usize) {
    let lo = if tap >= pad { 0 } else { (pad - tap).div_ceil(stride) };
    // o·stride + tap − pad ≤ len − 1  ⇔  o ≤ (len − 1 + pad − tap) / stride
    let hi = if len + pad > tap { ((len - 1 + pad - tap) / stride + 1).min(out) } else { 0 };
    (lo.min(hi), hi)
}

/// Half-open ranges `lo..hi` of output positions, one per kernel tap.
type TapRanges = Vec<(usize, usize)>;

/// Valid output rows and columns of every kernel tap: `(rows[ki], cols[kj])`.
fn tap_ranges(g: &ConvGeom) -> (TapRanges, TapRanges) {
    let rows = (0..g.k).map(|t| valid_range(g.oh, g.h, g.stride, g.pad, t)).collect();
    let cols = (0..g.k).map(|t| valid_range(g.ow, g.w, g.stride, g.pad, t)).collect();
    (rows, cols)
}

/// Unfolds one image `[c, h, w]` into `cols [c·k·k, oh·ow]` (zeros where the kernel reads
/// padding); row `r` starts at `cols[r·ld]` (`ld ≥ oh·ow`: images side by side in one matrix).
fn im2col(g: &ConvGeom, img: &[f32], cols: &mut [f32], ld: usize) {
    let p = g.pixels();
    let (yr, xr) = tap_ranges(g);
    for ci in 0..g.c {
        let plane = &img[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.k {
            let (ylo, yhi) = yr[ki];
            for kj in 0..g.k {
                let row = &mut cols[((ci * g.k + ki) * g.k + kj) * ld..][..p];
                let (xlo, xhi) = xr[kj];
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    if oy < ylo || oy >= yhi || xlo >= xhi {
                        dst.fill(0.0);
                        continue;
                    }
                    let iy = oy * g.stride + ki - g.pad;
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    dst[..xlo].fill(0.0);
                    dst[xhi..].fill(0.0);
                    let ix0 = xlo * g.stride + kj - g.pad;
                    if g.stride == 1 {
                        dst[xlo..xhi].copy_from_slice(&src[ix0..ix0 + (xhi - xlo)]);
                    } else {
                        for (d, s) in dst[xlo..xhi].iter_mut().zip(src[ix0..].iter().step_by(g.stride)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Unfolds one image into the transposed column matrix `cols_t [oh·ow, c·k·k]` (row-major), the
/// layout in which the weight-gradient GEMM runs at full speed (its reduction over pixels then
/// reads both operands along rows).
fn im2col_t(g: &ConvGeom, img: &[f32], padded: &mut Vec<f32>, cols_t: &mut [f32]) {
    let kk = g.rows();
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    // Zero-padded copy of the image, so the gather below needs no bounds checks.
    padded.clear();
    padded.resize(g.c * hp * wp, 0.0);
    for ci in 0..g.c {
        for y in 0..g.h {
            let src = &img[(ci * g.h + y) * g.w..][..g.w];
            padded[(ci * hp + y + g.pad) * wp + g.pad..][..g.w].copy_from_slice(src);
        }
    }
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let dst = &mut cols_t[(oy * g.ow + ox) * kk..][..kk];
            let (y0, x0) = (oy * g.stride, ox * g.stride);
            let mut r = 0;
            for ci in 0..g.c {
                for ki in 0..g.k {
                    let src = &padded[(ci * hp + y0 + ki) * wp + x0..][..g.k];
                    for (d, v) in dst[r..r + g.k].iter_mut().zip(src) {
                        *d = *v;
                    }
                    r += g.k;
                }
            }
        }
    }
}

/// Adds `cols [c·k·k, oh·ow]` (row stride `ld`) back onto one image gradient `[c, h, w]` (the
/// adjoint of [`im2col`]).
fn col2im(g: &ConvGeom, cols: &[f32], ld: usize, img: &mut [f32]) {
    let p = g.pixels();
    let (yr, xr) = tap_ranges(g);
    img.fill(0.0);
    for ci in 0..g.c {
        let plane = &mut img[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..g.k {
            let (ylo, yhi) = yr[ki];
            for kj in 0..g.k {
                let row = &cols[((ci * g.k + ki) * g.k + kj) * ld..][..p];
                let (xlo, xhi) = xr[kj];
                if xlo >= xhi {
                    continue;
                }
                for oy in ylo..yhi {
                    let src = &row[oy * g.ow + xlo..oy * g.ow + xhi];
                    let iy = oy * g.stride + ki - g.pad;
                    let ix0 = xlo * g.stride + kj - g.pad;
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    if g.stride == 1 {
                        for (d, s) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[ix0..].iter_mut().step_by(g.stride).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// Strided view `rows × cols` with element (i, j) at `data[i·rs + j·cs]`.
fn view(data: &[f32], rows: usize, cols: usize, rs: usize, cs: usize) -> MatRef<'_> {
    MatRef { data, rows, cols, row_stride: rs, col_stride: cs }
}

/// Images per GEMM: enough that a GEMM has ≥ 256 columns (the late ResNet stages have 1–64
/// pixels per image), never more than the batch. Depends only on the geometry.
fn group(g: &ConvGeom) -> usize {
    256usize.div_ceil(g.pixels().max(1)).clamp(1, g.n.max(1))
}

/// GEMM threading: across groups when there are enough of them, inside the GEMM otherwise.
fn inner_parallelism(groups: usize) -> gemm::Parallelism {
    if groups >= rayon::current_num_threads() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    }
}

/// Forward: `y [n, o, oh, ow] = x [n, c, h, w] ⊛ weight [o, c, k, k]`.
pub fn forward(g: &ConvGeom, x: &[f32], weight: &[f32]) -> Vec<f32> {
    CALLS[0].fetch_add(1, Ordering::Relaxed);
    MACS.fetch_add(g.macs(), Ordering::Relaxed);
    let (kk, p, gs) = (g.rows(), g.pixels(), group(g));
    let mut y = vec![0.0f32; g.n * g.out_len()];
    if y.is_empty() {
        return y;
    }
    let par = inner_parallelism(g.n.div_ceil(gs));
    let wv = view(weight, g.o, kk, kk, 1);
    y.par_chunks_mut(gs * g.out_len()).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(cols, out), (gi, yg)| {
            let imgs = yg.len() / g.out_len();
            let x0 = gi * gs * g.in_len();
            if imgs == 1 && g.pointwise() {
                gemm_into(yg, false, wv, view(&x[x0..x0 + g.in_len()], kk, p, p, 1), par);
                return;
            }
            let ld = imgs * p;
            cols.resize(kk * ld, 0.0);
            for j in 0..imgs {
                im2col(g, &x[x0 + j * g.in_len()..][..g.in_len()], &mut cols[j * p..], ld);
            }
            if imgs == 1 {
                gemm_into(yg, false, wv, view(cols, kk, p, ld, 1), par);
                return;
            }
            // [o, imgs·p] → imgs × [o, p]
            out.resize(g.o * ld, 0.0);
            gemm_into(out, false, wv, view(cols, kk, ld, ld, 1), par);
            for j in 0..imgs {
                for oc in 0..g.o {
                    yg[j * g.out_len() + oc * p..][..p].copy_from_slice(&out[oc * ld + j * p..][..p]);
                }
            }
        },
    );
    y
}

/// Copies the output gradients of `imgs` images into one `[o, imgs·p]` matrix.
fn gather_dy(g: &ConvGeom, dy: &[f32], imgs: usize, buf: &mut Vec<f32>) {
    let (p, ld) = (g.pixels(), imgs * g.pixels());
    buf.resize(g.o * ld, 0.0);
    for j in 0..imgs {
        for oc in 0..g.o {
            buf[oc * ld + j * p..][..p].copy_from_slice(&dy[j * g.out_len() + oc * p..][..p]);
        }
    }
}

/// Input gradient: `dx = weightᵀ · dy`, folded back onto the images (col2im).
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    CALLS[1].fetch_add(1, Ordering::Relaxed);
    MACS.fetch_add(g.macs(), Ordering::Relaxed);
    let (kk, p, gs) = (g.rows(), g.pixels(), group(g));
    let mut dx = vec![0.0f32; g.n * g.in_len()];
    if dx.is_empty() {
        return dx;
    }
    let par = inner_parallelism(g.n.div_ceil(gs));
    // weightᵀ as a view: (row r, col o) at o·kk + r.
    let wt = view(weight, kk, g.o, 1, kk);
    dx.par_chunks_mut(gs * g.in_len()).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(cols, dyg), (gi, dxg)| {
            let imgs = dxg.len() / g.in_len();
            let dy0 = &dy[gi * gs * g.out_len()..][..imgs * g.out_len()];
            let ld = imgs * p;
            let dyv = if imgs == 1 {
                view(dy0, g.o, p, p, 1)
            } else {
                gather_dy(g, dy0, imgs, dyg);
                view(dyg, g.o, ld, ld, 1)
            };
            if imgs == 1 && g.pointwise() {
                gemm_into(dxg, false, wt, dyv, par);
                return;
            }
            cols.resize(kk * ld, 0.0);
            gemm_into(cols, false, wt, dyv, par);
            for j in 0..imgs {
                col2im(g, &cols[j * p..], ld, &mut dxg[j * g.in_len()..][..g.in_len()]);
            }
        },
    );
    dx
}

/// Weight gradient: `dweight [o, c·k·k] = Σ_images dy · colsᵀ`, one GEMM per fixed chunk of
/// images (its reduction runs over all their pixels), the chunks' partial sums added in order.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    CALLS[2].fetch_add(1, Ordering::Relaxed);
    MACS.fetch_add(g.macs(), Ordering::Relaxed);
    let (kk, p) = (g.rows(), g.pixels());
    let wlen = g.o * kk;
    let chunk = group(g).max(WGRAD_CHUNK.min(g.n.max(1)));
    let chunks: Vec<usize> = (0..g.n.div_ceil(chunk)).collect();
    let par = inner_parallelism(chunks.len());
    let partials: Vec<Vec<f32>> = chunks
        .par_iter()
        .map(|&ch| {
            let first = ch * chunk;
            let imgs = chunk.min(g.n - first);
            let ld = imgs * p;
            let mut cols_t = vec![0.0f32; ld * kk];
            let mut padded = Vec::new();
            for j in 0..imgs {
                let img = &x[(first + j) * g.in_len()..][..g.in_len()];
                im2col_t(g, img, &mut padded, &mut cols_t[j * p * kk..(j + 1) * p * kk]);
            }
            let mut dyg = Vec::new();
            gather_dy(g, &dy[first * g.out_len()..][..imgs * g.out_len()], imgs, &mut dyg);
            let mut acc = vec![0.0f32; wlen];
            gemm_into(&mut acc, false, view(&dyg, g.o, ld, ld, 1), view(&cols_t, ld, kk, kk, 1), par);
            acc
        })
        .collect();
    let mut out = vec![0.0f32; wlen];
    for part in &partials {
        for (o, v) in out.iter_mut().zip(part) {
            *o += *v;
        }
    }
    out
}
