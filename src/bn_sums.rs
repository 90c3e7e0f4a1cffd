//! The row sums of the BatchNorm kernels ([`crate::bn_kernels`]) in float64: the statistics
//! `Σ(x − K)`, `Σ(x − K)²` of the forward pass and the gradient sums `Σg`, `Σg·(x − μ)` of the
//! backward pass, written out for AVX-512 (one vector of 8 float64) and AVX2 (two of 4), with a
//! portable loop beside them. (Left to the compiler, these loops widened and added one value
//! at a time: `vcvtss2sd`/`vaddsd` in `perf`, ninth session.)
//!
//! The sums run over all rows of a channel (one per image). Every path adds in the same order —
//! the first `8·⌊s/8⌋` values of each row into 8 vector lanes (value `j` into lane `j mod 8`),
//! the last `s mod 8` into 8 more lanes (value `j` of them into lane `j`), rows in order;
//! multiplications and additions rounded separately (no fused multiply-add); then the vector
//! lanes in order, the other lanes in order, and the two — so all three give the same bits.

use crate::simd::{self, Isa};

/// `(Σ(x − k), Σ(x − k)²)` over `rows`, in float64.
#[inline(always)]
pub(crate) fn moments<'a>(rows: impl Iterator<Item = &'a [f32]>, k: f64) -> (f64, f64) {
    moments_on(simd::best(), rows, k)
}

/// [`moments`] on the given instruction set (which must be this processor's or below).
#[inline(always)]
fn moments_on<'a>(isa: Option<Isa>, rows: impl Iterator<Item = &'a [f32]>, k: f64) -> (f64, f64) {
    let term = |v: f32| {
        let d = v as f64 - k;
        (d, d * d)
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `best` found the instruction set on this processor.
    match isa {
        Some(Isa::Avx512) => return unsafe { x86::moments_512(rows, k, term) },
        Some(Isa::Avx2) => return unsafe { x86::moments_256(rows, k, term) },
        None => {}
    }
    portable(rows.map(|r| (r, r)), |v, _| term(v))
}

/// The gradient reaching the affine output of a BatchNorm(+ReLU) from the output gradient `d`
/// at input `v`: `d` where `(v − m)·a + b > 0` (the forward's output before ReLU, the same
/// float32 operations), else 0; all of `d` without ReLU.
#[derive(Clone, Copy)]
pub(crate) struct Mask {
    pub m: f32,
    pub a: f32,
    pub b: f32,
    pub relu: bool,
}

impl Mask {
    #[inline(always)]
    pub(crate) fn apply(self, d: f32, v: f32) -> f32 {
        if !self.relu || (v - self.m) * self.a + self.b > 0.0 {
            d
        } else {
            0.0
        }
    }
}

/// `(Σg, Σg·(x − mean))` over rows of output gradients and inputs `(dy, x)`, g =
/// `mask.apply(dy, x)`, in float64.
#[inline(always)]
pub(crate) fn grad_sums<'a>(rows: impl Iterator<Item = (&'a [f32], &'a [f32])>, mask: Mask, mean: f64) -> (f64, f64) {
    grad_sums_on(simd::best(), rows, mask, mean)
}

/// [`grad_sums`] on the given instruction set (which must be this processor's or below).
#[inline(always)]
fn grad_sums_on<'a>(
    isa: Option<Isa>,
    rows: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    mask: Mask,
    mean: f64,
) -> (f64, f64) {
    let term = |d: f32, v: f32| {
        let g = mask.apply(d, v) as f64;
        (g, g * (v as f64 - mean))
    };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `best` found the instruction set on this processor.
    match isa {
        Some(Isa::Avx512) => return unsafe { x86::grad_sums_512(rows, mask, mean, term) },
        Some(Isa::Avx2) => return unsafe { x86::grad_sums_256(rows, mask, mean, term) },
        None => {}
    }
    portable(rows, term)
}

/// Eight float64 lanes of each of the two sums.
type Lanes = ([f64; 8], [f64; 8]);

/// The portable loop: the vector lanes as arrays.
#[inline(always)]
fn portable<'a>(rows: impl Iterator<Item = (&'a [f32], &'a [f32])>, f: impl Fn(f32, f32) -> (f64, f64)) -> (f64, f64) {
    let (mut lanes, mut rest): (Lanes, Lanes) = Default::default();
    for (a, b) in rows {
        let cut = a.len() / 8 * 8;
        for (j, (x, y)) in a[..cut].iter().zip(b).enumerate() {
            let (u, v) = f(*x, *y);
            lanes.0[j % 8] += u;
            lanes.1[j % 8] += v;
        }
        add_rest(&mut rest, &a[cut..], &b[cut..], &f);
    }
    total(lanes, rest)
}

/// Adds a row's last values (fewer than 8) into the other lanes.
#[inline(always)]
fn add_rest(rest: &mut Lanes, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) {
    for (j, (x, y)) in a.iter().zip(b).enumerate() {
        let (u, v) = f(*x, *y);
        rest.0[j] += u;
        rest.1[j] += v;
    }
}

/// The vector lanes in order, the other lanes in order, then the two.
#[inline(always)]
fn total(lanes: Lanes, rest: Lanes) -> (f64, f64) {
    let sum = |l: [f64; 8]| l.iter().sum::<f64>();
    (sum(lanes.0) + sum(rest.0), sum(lanes.1) + sum(rest.1))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{add_rest, total, Lanes, Mask};
    use std::arch::x86_64::*;

    /// Eight float64 lanes: one AVX-512 vector or two AVX2 vectors. Every method is
    /// `#[inline(always)]` (compiled inside the `#[target_feature]` functions below).
    trait F64x8: Copy {
        unsafe fn splat(v: f64) -> Self;
        /// 8 float32 values, widened.
        unsafe fn widen(x: __m256) -> Self;
        unsafe fn add(self, o: Self) -> Self;
        unsafe fn sub(self, o: Self) -> Self;
        unsafe fn mul(self, o: Self) -> Self;
        unsafe fn store(self, to: &mut [f64; 8]);
    }

    #[derive(Clone, Copy)]
    struct W512(__m512d);
    #[derive(Clone, Copy)]
    struct W256([__m256d; 2]);

    impl F64x8 for W512 {
        #[inline(always)]
        unsafe fn splat(v: f64) -> Self {
            W512(_mm512_set1_pd(v))
        }
        #[inline(always)]
        unsafe fn widen(x: __m256) -> Self {
            W512(_mm512_cvtps_pd(x))
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            W512(_mm512_add_pd(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            W512(_mm512_sub_pd(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            W512(_mm512_mul_pd(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn store(self, to: &mut [f64; 8]) {
            _mm512_storeu_pd(to.as_mut_ptr(), self.0)
        }
    }

    impl F64x8 for W256 {
        #[inline(always)]
        unsafe fn splat(v: f64) -> Self {
            W256([_mm256_set1_pd(v); 2])
        }
        #[inline(always)]
        unsafe fn widen(x: __m256) -> Self {
            W256([_mm256_cvtps_pd(_mm256_castps256_ps128(x)), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x))])
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            W256([_mm256_add_pd(self.0[0], o.0[0]), _mm256_add_pd(self.0[1], o.0[1])])
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            W256([_mm256_sub_pd(self.0[0], o.0[0]), _mm256_sub_pd(self.0[1], o.0[1])])
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            W256([_mm256_mul_pd(self.0[0], o.0[0]), _mm256_mul_pd(self.0[1], o.0[1])])
        }
        #[inline(always)]
        unsafe fn store(self, to: &mut [f64; 8]) {
            _mm256_storeu_pd(to.as_mut_ptr(), self.0[0]);
            _mm256_storeu_pd(to.as_mut_ptr().add(4), self.0[1]);
        }
    }

    /// ReLU's mask on 8 values: `d` where `(v − m)·a + b > 0`, else +0.
    #[inline(always)]
    unsafe fn masked(mask: Mask, d: __m256, v: __m256) -> __m256 {
        if !mask.relu {
            return d;
        }
        let (m, a, b) = (_mm256_set1_ps(mask.m), _mm256_set1_ps(mask.a), _mm256_set1_ps(mask.b));
        let pre = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, m), a), b);
        _mm256_and_ps(d, _mm256_cmp_ps::<_CMP_GT_OQ>(pre, _mm256_setzero_ps()))
    }

    /// The vector terms of the two sums for 8 values of each input (a trait with an
    /// `#[inline(always)]` method rather than a closure, so it is compiled inside the
    /// `#[target_feature]` functions and its intrinsics inlined).
    trait Terms<W> {
        unsafe fn vector(&self, a: __m256, b: __m256) -> (W, W);
    }

    /// `(d, d²)` with `d = x − k` (b unused).
    struct Moments<W>(W);

    impl<W: F64x8> Terms<W> for Moments<W> {
        #[inline(always)]
        unsafe fn vector(&self, x: __m256, _: __m256) -> (W, W) {
            let d = W::widen(x).sub(self.0);
            (d, d.mul(d))
        }
    }

    /// `(g, g·(x − mean))` with `g` = dy through ReLU's mask (a = dy, b = x).
    struct Grads<W>(Mask, W);

    impl<W: F64x8> Terms<W> for Grads<W> {
        #[inline(always)]
        unsafe fn vector(&self, d: __m256, v: __m256) -> (W, W) {
            let g = W::widen(masked(self.0, d, v));
            (g, g.mul(W::widen(v).sub(self.1)))
        }
    }

    /// The two sums over rows of `(a, b)` pairs: `terms` for 8 values at a time, `term` for the
    /// rows' last `s mod 8`.
    #[inline(always)]
    unsafe fn sums<'a, W: F64x8>(
        rows: impl Iterator<Item = (&'a [f32], &'a [f32])>,
        terms: impl Terms<W>,
        term: impl Fn(f32, f32) -> (f64, f64),
    ) -> (f64, f64) {
        let (mut s, mut t) = (W::splat(0.0), W::splat(0.0));
        let mut rest: Lanes = Default::default();
        for (a, b) in rows {
            let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (x, y) in ca.zip(cb) {
                let (u, v) = terms.vector(_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
                s = s.add(u);
                t = t.add(v);
            }
            add_rest(&mut rest, ra, rb, &term);
        }
        let mut lanes: Lanes = Default::default();
        s.store(&mut lanes.0);
        t.store(&mut lanes.1);
        total(lanes, rest)
    }

    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn moments_512<'a>(
        rows: impl Iterator<Item = &'a [f32]>,
        k: f64,
        term: impl Fn(f32) -> (f64, f64),
    ) -> (f64, f64) {
        sums(rows.map(|r| (r, r)), Moments(W512::splat(k)), |v, _| term(v))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn moments_256<'a>(
        rows: impl Iterator<Item = &'a [f32]>,
        k: f64,
        term: impl Fn(f32) -> (f64, f64),
    ) -> (f64, f64) {
        sums(rows.map(|r| (r, r)), Moments(W256::splat(k)), |v, _| term(v))
    }

    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn grad_sums_512<'a>(
        rows: impl Iterator<Item = (&'a [f32], &'a [f32])>,
        mask: Mask,
        mean: f64,
        term: impl Fn(f32, f32) -> (f64, f64),
    ) -> (f64, f64) {
        sums(rows, Grads(mask, W512::splat(mean)), term)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad_sums_256<'a>(
        rows: impl Iterator<Item = (&'a [f32], &'a [f32])>,
        mask: Mask,
        mean: f64,
        term: impl Fn(f32, f32) -> (f64, f64),
    ) -> (f64, f64) {
        sums(rows, Grads(mask, W256::splat(mean)), term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of every length class (shorter than a vector, exact vectors, vectors and a tail) of
    /// values far from zero (where the shift matters) with a few exact zeros for the mask.
    fn data(n: usize, s: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n * s)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                if i % 37 == 0 {
                    0.0
                } else {
                    3.0 + (state % 20_000) as f32 / 10_000.0 - 1.0
                }
            })
            .collect()
    }

    /// Every instruction set this processor has gives the same bits as the portable loop, and
    /// all of them the float64 sums to ~1e-12.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let mut isas = vec![None];
        if let Some(best) = simd::best() {
            isas.push(Some(Isa::Avx2));
            if best == Isa::Avx512 {
                isas.push(Some(Isa::Avx512));
            }
        }
        for (n, s) in [(3, 1), (4, 7), (2, 8), (5, 16), (3, 29), (2, 1024)] {
            let (x, dy) = (data(n, s, 1), data(n, s, 2));
            let rows = || x.chunks(s);
            let pairs = || dy.chunks(s).zip(x.chunks(s));
            let mask = Mask { m: 3.0, a: 1.5, b: 0.25, relu: true };
            let exact_m: (f64, f64) = x
                .iter()
                .map(|v| (*v as f64 - 2.5, (*v as f64 - 2.5).powi(2)))
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            let exact_g = dy.iter().zip(&x).fold((0.0, 0.0), |a, (d, v)| {
                let g = mask.apply(*d, *v) as f64;
                (a.0 + g, a.1 + g * (*v as f64 - 3.0))
            });
            let reference = (moments_on(None, rows(), 2.5), grad_sums_on(None, pairs(), mask, 3.0));
            for isa in &isas {
                let got = (moments_on(*isa, rows(), 2.5), grad_sums_on(*isa, pairs(), mask, 3.0));
                let bits = |((a, b), (c, d)): ((f64, f64), (f64, f64))| [a, b, c, d].map(f64::to_bits);
                assert_eq!(bits(got), bits(reference), "{isa:?}, rows {n}×{s}");
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
            let ((m1, m2), (g1, g2)) = reference;
            assert!(close(m1, exact_m.0) && close(m2, exact_m.1), "moments {n}×{s}: {m1} {m2} vs {exact_m:?}");
            assert!(close(g1, exact_g.0) && close(g2, exact_g.1), "gradient sums {n}×{s}: {g1} {g2} vs {exact_g:?}");
            // The mask cut something and kept something.
            if n * s > 100 {
                assert!(dy.iter().zip(&x).any(|(d, v)| mask.apply(*d, *v) == 0.0 && *d != 0.0));
                assert!(dy.iter().zip(&x).any(|(d, v)| mask.apply(*d, *v) == *d && *d != 0.0));
            }
        }
    }
}
