//! Dense row-major `f32` matrix views and a checked wrapper around the `gemm` crate's blocked
//! matrix product. Used by the evaluation code (kNN similarity blocks, linear probe, logistic
//! regression), which works on precomputed feature matrices rather than burn tensors, and by the
//! CPU convolution kernels (src/conv.rs).

use gemm::Parallelism;

/// A read-only strided view of a `rows × cols` `f32` matrix: element `(i, j)` is
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` view. Panics if `data` is too short (internal use:
    /// callers validate user data first).
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix buffer too short");
        Self { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Index of the last element plus one, for bounds checking.
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// `dst = a · b` (overwrites `dst`, which must hold `a.rows × b.cols` row-major values).
/// `threads`: 1 runs on the calling thread; 0 or more lets `gemm` use rayon.
pub fn matmul_into(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, threads: usize) {
    let parallelism = if threads == 1 { Parallelism::None } else { Parallelism::Rayon(threads) };
    gemm_into(dst, false, a, b, parallelism);
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`; `dst` is row-major `a.rows × b.cols`
/// (exactly that many values). The one checked entry point to the `gemm` crate.
pub fn gemm_into(dst: &mut [f32], accumulate: bool, a: MatRef<'_>, b: MatRef<'_>, parallelism: Parallelism) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert_eq!(dst.len(), m * n, "matmul: destination has the wrong size");
    assert!(a.extent() <= a.data.len() && b.extent() <= b.data.len(), "matmul: view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the views were bounds-checked above, `dst` has exactly m*n elements with row
    // stride n and column stride 1, and the inputs do not alias `dst` (shared vs. mutable
    // borrows). gemm writes dst := 1.0·dst + 1.0·a·b when read_dst, else dst := 1.0·a·b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `a · b` as a new row-major buffer.
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>, threads: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; a.rows * b.cols];
    matmul_into(&mut dst, a, b, threads);
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive_including_transposes() {
        // a: 2x3, b: 2x3 -> a * b^T is 2x2; a^T * b is 3x3.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [0.5, -1.0, 2.0, 1.0, 0.0, -2.0];
        let ma = MatRef::row_major(&a, 2, 3);
        let mb = MatRef::row_major(&b, 2, 3);
        let abt = matmul(ma, mb.t(), 1);
        assert_eq!(abt, vec![4.5, -5.0, 9.0, -8.0]);
        let atb = matmul(ma.t(), mb, 0);
        let mut naive = vec![0.0f32; 9];
        for i in 0..3 {
            for j in 0..3 {
                for r in 0..2 {
                    naive[i * 3 + j] += a[r * 3 + i] * b[r * 3 + j];
                }
            }
        }
        assert_eq!(atb, naive);
    }
}
