//! CPU convolution kernels (f32, NCHW) for the flex backend: im2col + GEMM (the `gemm` crate),
//! forward, input gradient and weight gradient, parallel over the images of the batch. Each
//! pass first offers the convolution to the direct kernels of [`crate::direct_conv`] (3×3
//! stride-1 "same" convolutions on AVX-512/AVX2) and unfolds only what they decline.
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

use crate::cpu_ops::zeros;
use crate::dense::{gemm_into, MatRef};
use crate::direct_conv;
use crate::unfold::Unfold;
use crate::wide_unfold::Wide;

/// Kernel calls so far (forward, input gradient, weight gradient), for tests that check which
/// convolution path a graph took.
static CALLS: [AtomicUsize; 3] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

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
    /// Multiply-adds of one pass (forward, input or weight gradient) over the whole batch, all
    /// kernel taps counted: `n·o·c·k²·oh·ow`.
    pub fn macs(&self) -> usize {
        self.n * self.o * self.rows() * self.pixels()
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

/// The weight over the taps the unfolding keeps (`[o, c·a]`; the weight itself when all are).
fn active_weight<'a>(g: &ConvGeom, unfold: &Unfold, weight: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
    if unfold.compact(g) {
        std::borrow::Cow::Owned(unfold.compact_weight(g, weight))
    } else {
        std::borrow::Cow::Borrowed(weight)
    }
}

/// The padded-width unfolding ([`Wide`]) where it applies, unless `BYOL_ROW_UNFOLD=1` selects
/// the row-copy way (for benchmarks).
fn wide_way(g: &ConvGeom) -> Option<Wide> {
    static ROWS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if crate::cpu_ops::env_switch(&ROWS, "BYOL_ROW_UNFOLD") {
        None
    } else {
        Wide::new(g)
    }
}

/// Forward: `y [n, o, oh, ow] = x [n, c, h, w] ⊛ weight [o, c, k, k]`.
pub fn forward(g: &ConvGeom, x: &[f32], weight: &[f32]) -> Vec<f32> {
    CALLS[0].fetch_add(1, Ordering::Relaxed);
    if let Some(y) = direct_conv::forward(g, x, weight) {
        return y;
    }
    let gs = group(g);
    let unfold = Unfold::new(g, gs);
    let wide = wide_way(g);
    let (kk, p) = (unfold.rows(g), g.pixels());
    let mut y = zeros(g.n * g.out_len());
    if y.is_empty() {
        return y;
    }
    let par = inner_parallelism(g.n.div_ceil(gs));
    let weight = active_weight(g, &unfold, weight);
    let wv = view(&weight, g.o, kk, kk, 1);
    y.par_chunks_mut(gs * g.out_len()).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(cols, out, padded), (gi, yg)| {
            let imgs = yg.len() / g.out_len();
            let x0 = gi * gs * g.in_len();
            if imgs == 1 && g.pointwise() {
                gemm_into(yg, false, wv, view(&x[x0..x0 + g.in_len()], kk, p, p, 1), par);
                return;
            }
            let pitch = wide.as_ref().map_or(g.ow, Wide::pitch);
            let ld = imgs * g.oh * pitch;
            cols.resize(kk * ld, 0.0);
            let xs = &x[x0..x0 + imgs * g.in_len()];
            match &wide {
                Some(wide) => wide.im2col(g, xs, imgs, padded, cols, ld),
                None => unfold.im2col(g, xs, imgs, padded, cols, ld),
            }
            if imgs == 1 && wide.is_none() {
                gemm_into(yg, false, wv, view(cols, kk, p, ld, 1), par);
                return;
            }
            // [o, imgs·oh·pitch] → imgs × [o, oh, ow]
            out.resize(g.o * ld, 0.0);
            gemm_into(out, false, wv, view(cols, kk, ld, ld, 1), par);
            scatter_rows(g, out, g.o, imgs, pitch, yg);
        },
    );
    y
}

/// `(offset in maps [imgs, rows, oh, ow], offset in a matrix [rows, imgs·oh·pitch], length)` of
/// every run of values the two layouts share: whole maps when `pitch == ow`, else output rows
/// (the padded-width matrices of [`Wide`], `pitch − ow` junk columns after each row).
fn runs(g: &ConvGeom, rows: usize, imgs: usize, pitch: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let (p, ld, per_img) = (g.pixels(), imgs * g.oh * pitch, g.oh * pitch);
    let (oh, ow, per_row) = if pitch == g.ow { (1, p, 0) } else { (g.oh, g.ow, pitch) };
    (0..imgs * rows).flat_map(move |jr| {
        let (j, r) = (jr / rows, jr % rows);
        (0..oh).map(move |oy| ((j * rows + r) * p + oy * ow, r * ld + j * per_img + oy * per_row, ow))
    })
}

/// `buf [rows, imgs·oh·pitch]` ← `maps [imgs, rows, oh, ow]` (the output gradients), zeros in
/// the junk columns of padded-width rows.
pub(crate) fn gather_rows(g: &ConvGeom, maps: &[f32], rows: usize, imgs: usize, pitch: usize, buf: &mut Vec<f32>) {
    if pitch != g.ow {
        buf.clear();
    }
    buf.resize(rows * imgs * g.oh * pitch, 0.0);
    for (m, b, len) in runs(g, rows, imgs, pitch) {
        buf[b..b + len].copy_from_slice(&maps[m..m + len]);
    }
}

/// `maps [imgs, rows, oh, ow]` ← the valid columns of `src [rows, imgs·oh·pitch]`.
pub(crate) fn scatter_rows(g: &ConvGeom, src: &[f32], rows: usize, imgs: usize, pitch: usize, maps: &mut [f32]) {
    for (m, b, len) in runs(g, rows, imgs, pitch) {
        maps[m..m + len].copy_from_slice(&src[b..b + len]);
    }
}

/// Input gradient: `dx = weightᵀ · dy`, folded back onto the images (col2im).
pub fn backward_input(g: &ConvGeom, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    CALLS[1].fetch_add(1, Ordering::Relaxed);
    if let Some(dx) = direct_conv::backward_input(g, dy, weight) {
        return dx;
    }
    let gs = group(g);
    let unfold = Unfold::new(g, gs);
    let wide = wide_way(g);
    let (kk, p) = (unfold.rows(g), g.pixels());
    let mut dx = zeros(g.n * g.in_len());
    if dx.is_empty() {
        return dx;
    }
    let par = inner_parallelism(g.n.div_ceil(gs));
    // weightᵀ as a view: (row r, col o) at o·kk + r.
    let weight = active_weight(g, &unfold, weight);
    let wt = view(&weight, kk, g.o, 1, kk);
    dx.par_chunks_mut(gs * g.in_len()).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(cols, dyg, padded), (gi, dxg)| {
            let imgs = dxg.len() / g.in_len();
            let dy0 = &dy[gi * gs * g.out_len()..][..imgs * g.out_len()];
            let pitch = wide.as_ref().map_or(g.ow, Wide::pitch);
            let ld = imgs * g.oh * pitch;
            let dyv = if imgs == 1 && wide.is_none() {
                view(dy0, g.o, p, p, 1)
            } else {
                gather_rows(g, dy0, g.o, imgs, pitch, dyg);
                view(dyg, g.o, ld, ld, 1)
            };
            if imgs == 1 && g.pointwise() {
                gemm_into(dxg, false, wt, dyv, par);
                return;
            }
            cols.resize(kk * ld, 0.0);
            gemm_into(cols, false, wt, dyv, par);
            match &wide {
                Some(wide) => wide.col2im(g, cols, ld, imgs, padded, dxg),
                None => unfold.col2im(g, cols, ld, imgs, padded, dxg),
            }
        },
    );
    dx
}

/// Weight gradient: `dweightᵀ [c·k·k, o] = Σ_images cols · dyᵀ`, one GEMM per fixed chunk of
/// images (its reduction runs over all their pixels), the chunks' partial sums added in order,
/// then transposed to `[o, c, k, k]`. This orientation gives the GEMM `c·k·k` rows, not `o`: the
/// `gemm` crate's AVX-512 microkernel covers 64 rows at a time, and `o` is often 16–32 where
/// `c·k·k` is 144–1152; with it and the plain unfolding (no transposed copy) the weight
/// gradients of a CIFAR ResNet-18 (width 16, batch 64) take 72 instead of 116 ms.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    CALLS[2].fetch_add(1, Ordering::Relaxed);
    if let Some(dw) = direct_conv::backward_weight(g, x, dy) {
        return dw;
    }
    let chunk = group(g).max(WGRAD_CHUNK.min(g.n.max(1)));
    let unfold = Unfold::new(g, chunk);
    let wide = wide_way(g);
    let kk = unfold.rows(g);
    let wlen = g.o * kk;
    let chunks: Vec<usize> = (0..g.n.div_ceil(chunk)).collect();
    let par = inner_parallelism(chunks.len());
    let partials: Vec<Vec<f32>> = chunks
        .par_iter()
        .map_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(cols, dyg, padded), &ch| {
                let first = ch * chunk;
                let imgs = chunk.min(g.n - first);
                let pitch = wide.as_ref().map_or(g.ow, Wide::pitch);
                let ld = imgs * g.oh * pitch;
                let (xs, dys) =
                    (&x[first * g.in_len()..][..imgs * g.in_len()], &dy[first * g.out_len()..][..imgs * g.out_len()]);
                cols.resize(kk * ld, 0.0);
                match &wide {
                    Some(wide) => wide.im2col(g, xs, imgs, padded, cols, ld),
                    None => unfold.im2col(g, xs, imgs, padded, cols, ld),
                }
                gather_rows(g, dys, g.o, imgs, pitch, dyg);
                let mut acc = vec![0.0f32; wlen];
                gemm_into(&mut acc, false, view(cols, kk, ld, ld, 1), view(dyg, ld, g.o, 1, ld), par);
                acc
            },
        )
        .collect();
    // `[o, kk]` ← the partial sums `[kk, o]` added in chunk order and transposed, blocks of
    // output channels in parallel (one thread summed and transposed the 1.2 M values of a 512 ×
    // 256 × 3 × 3 weight in a third of its weight gradient's time).
    const TILE: usize = 16;
    let mut out = vec![0.0f32; wlen];
    out.par_chunks_mut((TILE * kk).max(1)).enumerate().for_each(|(b, rows)| {
        let (oc0, width) = (b * TILE, rows.len() / kk);
        for r in 0..kk {
            let mut acc = [0.0f32; TILE];
            for part in &partials {
                for (a, v) in acc.iter_mut().zip(&part[r * g.o + oc0..][..width]) {
                    *a += *v;
                }
            }
            for (j, a) in acc[..width].iter().enumerate() {
                rows[j * kk + r] = *a;
            }
        }
    });
    if unfold.compact(g) {
        // Inactive taps only ever read padding: their gradient is exactly zero.
        out = unfold.expand_weight(g, &out);
    }
    out
}
