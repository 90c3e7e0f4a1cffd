//! Unfolding images into column matrices (im2col), folding column gradients back onto images
//! (col2im, its adjoint) and the transposed unfolding of the weight gradient, for the convolution
//! kernels of src/conv.rs.
//!
//! Two ways to unfold. Wide outputs (stride 1, at least [`ROW_COPY_MIN_WIDTH`] output columns)
//! copy whole output rows at a time. Narrow or strided outputs — the late stages of a ResNet have
//! 1×1 to 8×8 feature maps, where the per-row bookkeeping of the row copy costs several times the
//! copy itself (it was a quarter of the `fashion-mnist` step) — gather through a table of offsets,
//! computed once per call, into a zero-padded copy of each channel plane: one tight loop per
//! column-matrix row, no bounds arithmetic per pixel.

use crate::conv::ConvGeom;

/// Narrowest output (in columns) that the row copy handles; narrower or strided ones use tables.
pub const ROW_COPY_MIN_WIDTH: usize = 16;

/// How one geometry is unfolded: row copies, or a gather table over zero-padded planes.
///
/// The gather way keeps only the *active* kernel taps, those that read the image (not padding)
/// at one output pixel at least: a 3×3, padding-1 convolution of a 1×1 feature map (the last
/// stage of a ResNet on small images) has one active tap, so its column matrix has `c` rows
/// instead of `9·c` and its GEMMs a ninth of the work; the other taps' products are zero.
pub struct Unfold {
    /// `table[j·p + q]` (or `[q·a + j]` pixel-major): offset in a padded plane
    /// `[h + 2·pad, w + 2·pad]` of active tap `j` at output pixel `q` (= oy·ow + ox); empty for
    /// the row-copy way.
    table: Vec<u32>,
    /// Active taps `ki·k + kj`, ascending (every tap for the row-copy way).
    taps: Vec<usize>,
    hp: usize,
    wp: usize,
}

impl Unfold {
    /// The way to unfold `g` into `[c·a, p]` column matrices, `a` = active taps (tap-major).
    pub fn new(g: &ConvGeom) -> Self {
        let rows = g.stride == 1 && g.ow >= ROW_COPY_MIN_WIDTH;
        Self::build(g, !rows, false)
    }

    /// Table for the transposed unfolding `[p, c·a]` (pixel-major), always a gather.
    pub fn transposed(g: &ConvGeom) -> Self {
        Self::build(g, true, true)
    }

    fn build(g: &ConvGeom, gather: bool, pixel_major: bool) -> Self {
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        let p = g.pixels();
        let (yr, xr) = tap_ranges(g);
        let taps: Vec<usize> = (0..g.k * g.k)
            .filter(|t| !gather || (yr[t / g.k].0 < yr[t / g.k].1 && xr[t % g.k].0 < xr[t % g.k].1))
            .collect();
        let a = taps.len();
        let mut table = vec![0u32; if gather { a * p } else { 0 }];
        if gather {
            for (j, &t) in taps.iter().enumerate() {
                let (ki, kj) = (t / g.k, t % g.k);
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let q = oy * g.ow + ox;
                        let at = if pixel_major { q * a + j } else { j * p + q };
                        table[at] = ((oy * g.stride + ki) * wp + ox * g.stride + kj) as u32;
                    }
                }
            }
        }
        Self { table, taps, hp, wp }
    }

    /// Active taps `ki·k + kj`, ascending.
    pub fn taps(&self) -> &[usize] {
        &self.taps
    }

    /// Rows of the column matrix: channels × active taps.
    pub fn rows(&self, g: &ConvGeom) -> usize {
        g.c * self.taps.len()
    }

    /// Whether some taps are inactive (the weight must then be compacted to the active ones).
    pub fn compact(&self, g: &ConvGeom) -> bool {
        self.taps.len() < g.k * g.k
    }

    /// `weight [o, c, k, k]` restricted to the active taps: `[o, c·a]`.
    pub fn compact_weight(&self, g: &ConvGeom, weight: &[f32]) -> Vec<f32> {
        let kk = g.k * g.k;
        let mut out = Vec::with_capacity(g.o * self.rows(g));
        for oc in 0..g.o {
            for ci in 0..g.c {
                let w = &weight[(oc * g.c + ci) * kk..][..kk];
                out.extend(self.taps.iter().map(|&t| w[t]));
            }
        }
        out
    }

    /// A weight gradient over the active taps `[o, c·a]` spread back onto `[o, c, k, k]`.
    pub fn expand_weight(&self, g: &ConvGeom, compact: &[f32]) -> Vec<f32> {
        let (kk, a) = (g.k * g.k, self.taps.len());
        let mut out = vec![0f32; g.o * g.c * kk];
        for (row, src) in out.chunks_mut(kk).zip(compact.chunks(a)) {
            for (&t, v) in self.taps.iter().zip(src) {
                row[t] = *v;
            }
        }
        out
    }

    fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Unfolds one image `[c, h, w]` into `cols [c·a, oh·ow]` (zeros where the kernel reads
    /// padding); row `r` starts at `cols[r·ld]` (`ld ≥ oh·ow`: images side by side in one matrix).
    /// `padded` is scratch space, reused between calls.
    pub fn im2col(&self, g: &ConvGeom, img: &[f32], padded: &mut Vec<f32>, cols: &mut [f32], ld: usize) {
        if self.table.is_empty() {
            return im2col_rows(g, img, cols, ld);
        }
        let (a, p, plane) = (self.taps.len(), g.pixels(), self.plane());
        let src = self.padded(g, img, padded);
        for ci in 0..g.c {
            let chan = &src[ci * plane..(ci + 1) * plane];
            for j in 0..a {
                let row = &mut cols[(ci * a + j) * ld..][..p];
                for (d, &i) in row.iter_mut().zip(&self.table[j * p..(j + 1) * p]) {
                    *d = chan[i as usize];
                }
            }
        }
    }

    /// Unfolds one image into the transposed column matrix `cols_t [oh·ow, c·a]` (row-major), the
    /// layout in which the weight-gradient GEMM runs at full speed. Needs [`Unfold::transposed`].
    pub fn im2col_t(&self, g: &ConvGeom, img: &[f32], padded: &mut Vec<f32>, cols_t: &mut [f32]) {
        let (a, rows, plane) = (self.taps.len(), self.rows(g), self.plane());
        let src = self.padded(g, img, padded);
        for q in 0..g.pixels() {
            let taps = &self.table[q * a..(q + 1) * a];
            let dst = &mut cols_t[q * rows..(q + 1) * rows];
            for ci in 0..g.c {
                let chan = &src[ci * plane..(ci + 1) * plane];
                for (d, &i) in dst[ci * a..(ci + 1) * a].iter_mut().zip(taps) {
                    *d = chan[i as usize];
                }
            }
        }
    }

    /// Adds `cols [c·a, oh·ow]` (row stride `ld`) back onto one image gradient `[c, h, w]`,
    /// which it overwrites (the adjoint of [`Unfold::im2col`]). `padded` is scratch space.
    pub fn col2im(&self, g: &ConvGeom, cols: &[f32], ld: usize, padded: &mut Vec<f32>, img: &mut [f32]) {
        if self.table.is_empty() {
            return col2im_rows(g, cols, ld, img);
        }
        let (a, p, plane) = (self.taps.len(), g.pixels(), self.plane());
        let direct = g.pad == 0;
        let acc: &mut [f32] = if direct {
            img
        } else {
            padded.clear();
            padded.resize(g.c * plane, 0.0);
            padded
        };
        acc.fill(0.0);
        for ci in 0..g.c {
            let chan = &mut acc[ci * plane..(ci + 1) * plane];
            for j in 0..a {
                let row = &cols[(ci * a + j) * ld..][..p];
                for (&v, &i) in row.iter().zip(&self.table[j * p..(j + 1) * p]) {
                    chan[i as usize] += v;
                }
            }
        }
        if !direct {
            for ci in 0..g.c {
                for y in 0..g.h {
                    let src = &padded[(ci * self.hp + y + g.pad) * self.wp + g.pad..][..g.w];
                    img[(ci * g.h + y) * g.w..][..g.w].copy_from_slice(src);
                }
            }
        }
    }

    /// The image itself when there is no padding, else its zero-padded copy in `padded`.
    fn padded<'a>(&self, g: &ConvGeom, img: &'a [f32], padded: &'a mut Vec<f32>) -> &'a [f32] {
        if g.pad == 0 {
            return img;
        }
        padded.clear();
        padded.resize(g.c * self.plane(), 0.0);
        for ci in 0..g.c {
            for y in 0..g.h {
                let src = &img[(ci * g.h + y) * g.w..][..g.w];
                padded[(ci * self.hp + y + g.pad) * self.wp + g.pad..][..g.w].copy_from_slice(src);
            }
        }
        padded
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
/// padding); row `r` starts at `cols[r·ld]`. Row-copy way: whole output rows at a time.
fn im2col_rows(g: &ConvGeom, img: &[f32], cols: &mut [f32], ld: usize) {
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

/// Adds `cols [c·k·k, oh·ow]` (row stride `ld`) back onto one image gradient `[c, h, w]` (the
/// adjoint of [`im2col_rows`]). Row-copy way.
fn col2im_rows(g: &ConvGeom, cols: &[f32], ld: usize, img: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104729) % 1009) as f32 / 504.5 - 1.0).collect()
    }

    /// The gather table and the row copy produce the same column matrix and the same folded
    /// gradient, and col2im is the adjoint of im2col: ⟨im2col(x), C⟩ = ⟨x, col2im(C)⟩.
    #[test]
    fn gather_and_row_copy_agree_and_col2im_is_the_adjoint() {
        for (h, w, k, pad) in [(5, 20, 3, 1), (4, 17, 1, 0), (6, 18, 5, 2)] {
            let g = ConvGeom::new([1, 2, h, w], [3, 2, k, k], 1, pad).expect("geometry");
            let (rows, p) = (g.rows(), g.pixels());
            let ld = p + 3; // a wider row stride, as when images sit side by side
            let (by_rows, by_table) = (Unfold::new(&g), Unfold::build(&g, true, false));
            assert!(by_rows.table.is_empty() && !by_table.table.is_empty());
            let x = data(2 * h * w, 1);
            let mut pad_buf = Vec::new();
            let (mut a, mut b) = (vec![9.0; rows * ld], vec![9.0; rows * ld]);
            by_rows.im2col(&g, &x, &mut pad_buf, &mut a, ld);
            by_table.im2col(&g, &x, &mut pad_buf, &mut b, ld);
            let cols = data(rows * ld, 2);
            let (mut da, mut db) = (vec![5.0; x.len()], vec![5.0; x.len()]);
            by_rows.col2im(&g, &cols, ld, &mut pad_buf, &mut da);
            by_table.col2im(&g, &cols, ld, &mut pad_buf, &mut db);
            for r in 0..rows {
                assert_eq!(a[r * ld..r * ld + p], b[r * ld..r * ld + p], "im2col row {r}, {h}×{w} k{k}");
            }
            assert_eq!(da, db, "col2im, {h}×{w} k{k}");
            let lhs: f64 =
                (0..rows).flat_map(|r| (0..p).map(move |q| r * ld + q)).map(|i| (a[i] * cols[i]) as f64).sum();
            let rhs: f64 = x.iter().zip(&da).map(|(u, v)| (u * v) as f64).sum();
            assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "adjoint: {lhs} vs {rhs}");
            // The transposed unfolding holds the same matrix, transposed.
            let mut t = vec![0.0; p * rows];
            Unfold::transposed(&g).im2col_t(&g, &x, &mut pad_buf, &mut t);
            for r in 0..rows {
                for q in 0..p {
                    assert_eq!(t[q * rows + r], a[r * ld + q], "im2col_t ({q}, {r})");
                }
            }
        }
    }

    /// Only taps that read the image survive: one for a 3×3 padded kernel over a 1×1 map, four
    /// for the stride-2 step from 2×2 to 1×1; compacting and expanding a weight round-trips.
    #[test]
    fn inactive_taps_are_dropped() {
        let one = ConvGeom::new([1, 2, 1, 1], [3, 2, 3, 3], 1, 1).expect("geometry");
        assert_eq!(Unfold::new(&one).taps(), &[4]);
        let down = ConvGeom::new([1, 2, 2, 2], [3, 2, 3, 3], 2, 1).expect("geometry");
        assert_eq!(Unfold::transposed(&down).taps(), &[4, 5, 7, 8]);
        let u = Unfold::new(&down);
        let w = data(3 * 2 * 9, 3);
        let back = u.expand_weight(&down, &u.compact_weight(&down, &w));
        for (i, (a, b)) in back.iter().zip(&w).enumerate() {
            assert_eq!(*a, if u.taps().contains(&(i % 9)) { *b } else { 0.0 }, "weight {i}");
        }
    }
}
