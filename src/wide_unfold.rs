//! Unfolding of wide stride-1 convolutions over padded-width rows, for the forward pass and the
//! weight gradient of src/conv.rs (the 3×3 layers of a ResNet's early stages on CIFAR-size
//! images: 16–32 output columns).
//!
//! With the images zero-padded to `[c, h + 2p, w + 2p]`, the column-matrix row of channel `c`
//! and kernel tap `(ki, kj)` over *padded-width* output rows (`wp = w + 2p` columns each, the
//! last `wp − ow` of them junk) is one contiguous slice of the padded channel plane, starting at
//! `ki·wp + kj`. One long copy per row replaces `oh` short copies plus zero fills at the borders
//! (the row-copy way of [`crate::unfold`]), at the price of `wp/ow` more columns (1.06× for
//! 32-wide maps). The forward GEMM's junk columns are dropped and the output gradient gets zeros
//! there, so they add nothing to the gradients (`gather_rows` / `scatter_rows` of src/conv.rs).

use crate::conv::ConvGeom;
use crate::unfold::ROW_COPY_MIN_WIDTH;

/// Padded-width unfolding of one geometry.
pub struct Wide {
    hp: usize,
    wp: usize,
}

impl Wide {
    /// The padded-width way for stride-1 convolutions wider than 1×1 with at least
    /// [`ROW_COPY_MIN_WIDTH`] output columns; `None` otherwise.
    pub fn new(g: &ConvGeom) -> Option<Self> {
        (g.stride == 1 && g.k > 1 && g.ow >= ROW_COPY_MIN_WIDTH)
            .then(|| Self { hp: g.h + 2 * g.pad, wp: g.w + 2 * g.pad })
    }

    /// Columns per output row in the column matrix: `wp`, the padded width.
    pub fn pitch(&self) -> usize {
        self.wp
    }

    fn cols(&self, g: &ConvGeom) -> usize {
        g.oh * self.wp
    }

    fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Zeroed padded planes for `imgs` images in `padded`; the last rows of the last plane read
    /// k − 1 values past it (junk columns only).
    fn zeroed(&self, g: &ConvGeom, imgs: usize, padded: &mut Vec<f32>) {
        padded.clear();
        padded.resize(imgs * g.c * self.plane() + g.k - 1, 0.0);
    }

    /// `(offset in the images, offset in the padded planes)` of every image row.
    fn image_rows(&self, g: &ConvGeom, imgs: usize) -> impl Iterator<Item = (usize, usize)> {
        let (g, wp, plane) = (*g, self.wp, self.plane());
        (0..imgs * g.c)
            .flat_map(move |ic| (0..g.h).map(move |y| ((ic * g.h + y) * g.w, ic * plane + (y + g.pad) * wp + g.pad)))
    }

    /// `(column-matrix row, image, start of its slice in the padded planes)` of every row of
    /// every image: channel `c`, tap `(ki, kj)` starts at `ki·wp + kj` of the channel's plane.
    fn col_rows(&self, g: &ConvGeom, imgs: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (g, wp, plane, kk) = (*g, self.wp, self.plane(), g.k * g.k);
        (0..imgs).flat_map(move |i| {
            (0..g.c * kk).map(move |r| {
                let (ci, t) = (r / kk, r % kk);
                (r, i, (i * g.c + ci) * plane + (t / g.k) * wp + t % g.k)
            })
        })
    }

    /// Unfolds `imgs` images `[imgs, c, h, w]` into `cols [c·k·k, imgs·oh·wp]` (row `r` at
    /// `cols[r·ld]`); `padded` is scratch space.
    pub fn im2col(&self, g: &ConvGeom, x: &[f32], imgs: usize, padded: &mut Vec<f32>, cols: &mut [f32], ld: usize) {
        let q = self.cols(g);
        self.zeroed(g, imgs, padded);
        for (src, dst) in self.image_rows(g, imgs) {
            padded[dst..dst + g.w].copy_from_slice(&x[src..src + g.w]);
        }
        for (r, i, at) in self.col_rows(g, imgs) {
            cols[r * ld + i * q..][..q].copy_from_slice(&padded[at..at + q]);
        }
    }

    /// Folds `cols [c·k·k, imgs·oh·wp]` (row stride `ld`, zeros in the junk columns) back onto
    /// the gradients of `imgs` images `[imgs, c, h, w]`, which it overwrites (the adjoint of
    /// [`Wide::im2col`]): one long addition per column-matrix row, into zero-padded planes.
    pub fn col2im(&self, g: &ConvGeom, cols: &[f32], ld: usize, imgs: usize, padded: &mut Vec<f32>, dx: &mut [f32]) {
        let q = self.cols(g);
        self.zeroed(g, imgs, padded);
        for (r, i, at) in self.col_rows(g, imgs) {
            for (d, v) in padded[at..at + q].iter_mut().zip(&cols[r * ld + i * q..][..q]) {
                *d += v;
            }
        }
        for (dst, src) in self.image_rows(g, imgs) {
            dx[dst..dst + g.w].copy_from_slice(&padded[src..src + g.w]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{gather_rows, scatter_rows};
    use crate::unfold::Unfold;

    /// The padded-width column matrix, cropped to the valid columns, is the row-copy one.
    #[test]
    fn valid_columns_equal_the_row_copy_unfolding() {
        for (h, w, k, pad, imgs) in [(5, 20, 3, 1, 2), (6, 18, 5, 2, 1), (4, 18, 3, 0, 3)] {
            let c = 2;
            let g = ConvGeom::new([imgs, c, h, w], [3, c, k, k], 1, pad).expect("geometry");
            let wide = Wide::new(&g).expect("wide geometry");
            let x: Vec<f32> = (0..imgs * c * h * w).map(|i| (i % 23) as f32 - 11.0).collect();
            let (rows, p, q) = (g.rows(), g.pixels(), wide.cols(&g));
            let mut cols = vec![f32::NAN; rows * imgs * q];
            wide.im2col(&g, &x, imgs, &mut Vec::new(), &mut cols, imgs * q);
            let mut cropped = vec![0.0; imgs * rows * p];
            scatter_rows(&g, &cols, rows, imgs, wide.pitch(), &mut cropped);
            let mut reference = vec![0.0; rows * imgs * p];
            Unfold::new(&g, imgs).im2col(&g, &x, imgs, &mut Vec::new(), &mut reference, imgs * p);
            for i in 0..imgs {
                for r in 0..rows {
                    assert_eq!(
                        cropped[(i * rows + r) * p..][..p],
                        reference[r * imgs * p + i * p..][..p],
                        "{h}×{w} k{k}"
                    );
                }
            }
            // col2im: the adjoint, equal to the row-copy way's on the valid columns.
            let grad: Vec<f32> = (0..rows * imgs * p).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
            let mut grad_i = vec![0.0; imgs * rows * p]; // [imgs, rows, p] for gather_rows
            for i in 0..imgs {
                for r in 0..rows {
                    grad_i[(i * rows + r) * p..][..p].copy_from_slice(&grad[r * imgs * p + i * p..][..p]);
                }
            }
            let mut wide_cols = Vec::new();
            gather_rows(&g, &grad_i, rows, imgs, wide.pitch(), &mut wide_cols);
            let (mut dx_wide, mut dx_rows) = (vec![9.0; imgs * c * h * w], vec![9.0; imgs * c * h * w]);
            wide.col2im(&g, &wide_cols, imgs * q, imgs, &mut Vec::new(), &mut dx_wide);
            Unfold::new(&g, imgs).col2im(&g, &grad, imgs * p, imgs, &mut Vec::new(), &mut dx_rows);
            assert_eq!(dx_wide, dx_rows, "col2im {h}×{w} k{k}");
            let mut expanded = Vec::new();
            gather_rows(&g, &cropped, rows, imgs, wide.pitch(), &mut expanded);
            let mut back = vec![0.0; imgs * rows * p];
            scatter_rows(&g, &expanded, rows, imgs, wide.pitch(), &mut back);
            assert_eq!(back, cropped);
            assert_eq!(expanded.iter().filter(|v| **v != 0.0).count(), cropped.iter().filter(|v| **v != 0.0).count());
        }
    }
}
