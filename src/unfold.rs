//! Unfolding images into column matrices (im2col), folding column gradients back onto images
//! (col2im, its adjoint), for the convolution kernels of src/conv.rs.
//!
//! Two ways to unfold. Wide outputs (stride 1, at least [`ROW_COPY_MIN_WIDTH`] output columns)
//! copy whole output rows at a time. Narrow or strided outputs — the late stages of a ResNet have
//! 1×1 to 8×8 feature maps, where the per-row bookkeeping of the row copy costs several times the
//! copy itself (it was a quarter of the `fashion-mnist` step) — gather through a table of offsets,
//! computed once per call, into a zero-padded copy of each channel plane: one tight loop per
//! column-matrix row, no bounds arithmetic per pixel. The convolutions of src/conv.rs unfold wide
//! stride-1 kernels wider than 1×1 over padded-width rows instead (src/wide_unfold.rs); the row
//! copy remains for wide 1×1 kernels and, with `BYOL_ROW_UNFOLD=1`, as the reference.

use crate::conv::ConvGeom;

/// Narrowest output (in columns) that the row copy handles; narrower or strided ones use tables.
pub const ROW_COPY_MIN_WIDTH: usize = 16;

/// How one geometry is unfolded: row copies, or a gather table over zero-padded planes.
///
/// The gather way works on a group of images at once (one table row spans every image of the
/// group, so the late stages' 1–16-pixel maps still give long loops), and keeps only the
/// *active* kernel taps, those that read the image (not padding) at one output pixel at least:
/// a 3×3, padding-1 convolution of a 1×1 feature map (the last stage of a ResNet on small
/// images) has one active tap, so its column matrix has `c` rows instead of `9·c` and its GEMMs
/// a ninth of the work; the other taps' products are zero.
pub struct Unfold {
    /// `table[j·gp + i·p + q]` (`gp` = group · p): offset, in a group of zero-padded images
    /// `[group, c, h + 2·pad, w + 2·pad]`, of active tap `j` of image `i` at output pixel `q`
    /// (= oy·ow + ox), channel 0; empty for the row-copy way.
    table: Vec<u32>,
    /// Active taps `ki·k + kj`, ascending (every tap for the row-copy way).
    taps: Vec<usize>,
    /// Table entries per active tap: group · p.
    row_len: usize,
    hp: usize,
    wp: usize,
}

impl Unfold {
    /// The way to unfold `g` into `[c·a, group·p]` column matrices, `a` = active taps, for
    /// groups of at most `group` images: row copies for wide stride-1 outputs, else a gather.
    pub fn new(g: &ConvGeom, group: usize) -> Self {
        let rows = g.stride == 1 && g.ow >= ROW_COPY_MIN_WIDTH;
        Self::build(g, !rows, group)
    }

    fn build(g: &ConvGeom, gather: bool, group: usize) -> Self {
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        let (p, img) = (g.pixels(), g.c * hp * wp);
        let (yr, xr) = tap_ranges(g);
        let taps: Vec<usize> = (0..g.k * g.k)
            .filter(|t| !gather || (yr[t / g.k].0 < yr[t / g.k].1 && xr[t % g.k].0 < xr[t % g.k].1))
            .collect();
        let mut table = Vec::with_capacity(if gather { taps.len() * group * p } else { 0 });
        if gather {
            for &t in &taps {
                let (ki, kj) = (t / g.k, t % g.k);
                for i in 0..group {
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            table.push((i * img + (oy * g.stride + ki) * wp + ox * g.stride + kj) as u32);
                        }
                    }
                }
            }
        }
        Self { table, taps, row_len: group * p, hp, wp }
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

    /// Table row of active tap `j` for the first `imgs` images of a group.
    fn table_row(&self, j: usize, len: usize) -> &[u32] {
        &self.table[j * self.row_len..][..len]
    }

    /// Unfolds `imgs` images `[imgs, c, h, w]` (at most the group) into `cols [c·a, imgs·p]`
    /// (zeros where the kernel reads padding), row `r` at `cols[r·ld]`. `padded` is scratch
    /// space for this unfolding alone: its borders stay zero from call to call.
    pub fn im2col(&self, g: &ConvGeom, x: &[f32], imgs: usize, padded: &mut Vec<f32>, cols: &mut [f32], ld: usize) {
        let (p, in_len) = (g.pixels(), g.c * g.h * g.w);
        if self.table.is_empty() {
            for i in 0..imgs {
                im2col_rows(g, &x[i * in_len..][..in_len], &mut cols[i * p..], ld);
            }
            return;
        }
        let (a, plane, len) = (self.taps.len(), self.plane(), imgs * p);
        let src = self.padded(g, &x[..imgs * in_len], imgs, padded);
        for ci in 0..g.c {
            let chan = &src[ci * plane..];
            for j in 0..a {
                let row = &mut cols[(ci * a + j) * ld..][..len];
                for (d, &i) in row.iter_mut().zip(self.table_row(j, len)) {
                    *d = chan[i as usize];
                }
            }
        }
    }

    /// Folds `cols [c·a, imgs·p]` (row stride `ld`) back onto the gradients of `imgs` images
    /// `[imgs, c, h, w]`, which it overwrites (the adjoint of [`Unfold::im2col`]). `padded` is
    /// scratch space.
    pub fn col2im(&self, g: &ConvGeom, cols: &[f32], ld: usize, imgs: usize, padded: &mut Vec<f32>, dx: &mut [f32]) {
        let (p, in_len) = (g.pixels(), g.c * g.h * g.w);
        if self.table.is_empty() {
            for i in 0..imgs {
                col2im_rows(g, &cols[i * p..], ld, &mut dx[i * in_len..][..in_len]);
            }
            return;
        }
        let (a, plane, len) = (self.taps.len(), self.plane(), imgs * p);
        let direct = g.pad == 0;
        let acc: &mut [f32] = if direct {
            &mut dx[..imgs * in_len]
        } else {
            padded.clear();
            padded.resize(imgs * g.c * plane, 0.0);
            padded
        };
        acc.fill(0.0);
        for ci in 0..g.c {
            let chan = &mut acc[ci * plane..];
            for j in 0..a {
                let row = &cols[(ci * a + j) * ld..][..len];
                for (&v, &i) in row.iter().zip(self.table_row(j, len)) {
                    chan[i as usize] += v;
                }
            }
        }
        if !direct {
            for (img, out) in padded.chunks(g.c * plane).zip(dx.chunks_mut(in_len)) {
                for ci in 0..g.c {
                    for y in 0..g.h {
                        let src = &img[(ci * self.hp + y + g.pad) * self.wp + g.pad..][..g.w];
                        out[(ci * g.h + y) * g.w..][..g.w].copy_from_slice(src);
                    }
                }
            }
        }
    }

    /// The images themselves when there is no padding, else their zero-padded copies in
    /// `padded` (only the interiors are written: the borders stay zero between calls).
    fn padded<'a>(&self, g: &ConvGeom, x: &'a [f32], imgs: usize, padded: &'a mut Vec<f32>) -> &'a [f32] {
        if g.pad == 0 {
            return x;
        }
        let (plane, need) = (self.plane(), imgs * g.c * self.plane());
        if padded.len() < need {
            padded.resize(need, 0.0);
        }
        for (i, img) in x.chunks(g.c * g.h * g.w).enumerate() {
            for ci in 0..g.c {
                for y in 0..g.h {
                    let src = &img[(ci * g.h + y) * g.w..][..g.w];
                    let at = (i * g.c + ci) * plane + (y + g.pad) * self.wp + g.pad;
                    padded[at..at + g.w].copy_from_slice(src);
                }
            }
        }
        &padded[..need]
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
    /// gradients for a group of images, col2im is the adjoint of im2col (⟨im2col(x), C⟩ =
    /// ⟨x, col2im(C)⟩), and the transposed unfolding holds the same matrix transposed; a reused
    /// scratch buffer and a short last group change nothing.
    #[test]
    fn gather_and_row_copy_agree_and_col2im_is_the_adjoint() {
        for (h, w, k, pad) in [(5, 20, 3, 1), (4, 17, 1, 0), (6, 18, 5, 2)] {
            let (group, c) = (3, 2);
            let g = ConvGeom::new([group, c, h, w], [3, c, k, k], 1, pad).expect("geometry");
            let (rows, p, in_len) = (g.rows(), g.pixels(), c * h * w);
            let (by_rows, by_table) = (Unfold::new(&g, group), Unfold::build(&g, true, group));
            assert!(by_rows.table.is_empty() && !by_table.table.is_empty());
            let x = data(group * in_len, 1);
            let (mut pad_a, mut pad_b) = (Vec::new(), Vec::new());
            for imgs in [group, 2, group] {
                let ld = imgs * p + 3; // a wider row stride than the images need
                let (mut a, mut b) = (vec![9.0; rows * ld], vec![9.0; rows * ld]);
                by_rows.im2col(&g, &x, imgs, &mut pad_a, &mut a, ld);
                by_table.im2col(&g, &x, imgs, &mut pad_b, &mut b, ld);
                for r in 0..rows {
                    assert_eq!(a[r * ld..][..imgs * p], b[r * ld..][..imgs * p], "im2col row {r}, {h}×{w} k{k}");
                }
                let cols = data(rows * ld, 2);
                let (mut da, mut db) = (vec![5.0; imgs * in_len], vec![5.0; imgs * in_len]);
                by_rows.col2im(&g, &cols, ld, imgs, &mut Vec::new(), &mut da);
                by_table.col2im(&g, &cols, ld, imgs, &mut Vec::new(), &mut db);
                assert_eq!(da, db, "col2im, {h}×{w} k{k}");
                let lhs: f64 = (0..rows)
                    .flat_map(|r| (0..imgs * p).map(move |q| r * ld + q))
                    .map(|i| (a[i] * cols[i]) as f64)
                    .sum();
                let rhs: f64 = x.iter().zip(&da).map(|(u, v)| (u * v) as f64).sum();
                assert!((lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0), "adjoint: {lhs} vs {rhs}");
            }
        }
    }

    /// Only taps that read the image survive: one for a 3×3 padded kernel over a 1×1 map, four
    /// for the stride-2 step from 2×2 to 1×1; compacting and expanding a weight round-trips.
    #[test]
    fn inactive_taps_are_dropped() {
        let one = ConvGeom::new([1, 2, 1, 1], [3, 2, 3, 3], 1, 1).expect("geometry");
        assert_eq!(Unfold::new(&one, 1).taps(), &[4]);
        let down = ConvGeom::new([1, 2, 2, 2], [3, 2, 3, 3], 2, 1).expect("geometry");
        assert_eq!(Unfold::new(&down, 1).taps(), &[4, 5, 7, 8]);
        let u = Unfold::new(&down, 1);
        let w = data(3 * 2 * 9, 3);
        let back = u.expand_weight(&down, &u.compact_weight(&down, &w));
        for (i, (a, b)) in back.iter().zip(&w).enumerate() {
            assert_eq!(*a, if u.taps().contains(&(i % 9)) { *b } else { 0.0 }, "weight {i}");
        }
    }
}
