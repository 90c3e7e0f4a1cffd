//! Fixed-width `f32` vectors for the hand-written CPU kernels (src/direct_conv.rs): AVX-512
//! (16 lanes) or AVX2 + FMA (8 lanes), chosen once at run time from what the processor has.
//!
//! The kernels are written once, generic over [`Lanes`], and instantiated inside functions
//! compiled for each instruction set (`#[target_feature]`); every method is `#[inline(always)]`
//! so the intrinsics end up in those functions. Multiply-adds are fused (one rounding), so a
//! kernel's results depend on the lane count: runs are reproducible on one kind of processor.

use std::sync::OnceLock;

/// The vector instruction set the kernels use on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F + VL + DQ: 16 lanes, 32 registers.
    Avx512,
    /// AVX2 + FMA: 8 lanes, 16 registers.
    Avx2,
}

impl Isa {
    /// `f32` lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
        }
    }
}

/// The best instruction set this processor has, or `None` (not x86-64, no AVX2 + FMA, or
/// `BYOL_IM2COL=1`, which keeps every convolution on the im2col + GEMM path for comparison).
/// `BYOL_SIMD=avx2` stops at AVX2 on an AVX-512 processor (to test and time that path).
pub fn isa() -> Option<Isa> {
    static OFF: OnceLock<bool> = OnceLock::new();
    if crate::cpu_ops::env_switch(&OFF, "BYOL_IM2COL") {
        return None;
    }
    best()
}

/// The best instruction set of this processor (`BYOL_SIMD=avx2` stops at AVX2), whatever
/// `BYOL_IM2COL` says: what [`crate::vectorize`] compiles the element-wise loops for.
pub fn best() -> Option<Isa> {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = detect();
        match std::env::var("BYOL_SIMD").as_deref() {
            Ok("avx2") if best.is_some() => Some(Isa::Avx2),
            _ => best,
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Option<Isa> {
    use std::arch::is_x86_feature_detected as has;
    // VL and DQ (every AVX-512 processor since Skylake-SP has them) let the compiler zero and
    // move all 32 registers; with AVX-512F alone it spilled accumulators.
    if has!("avx512f") && has!("avx512vl") && has!("avx512dq") {
        Some(Isa::Avx512)
    } else if has!("avx2") && has!("fma") {
        Some(Isa::Avx2)
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Option<Isa> {
    None
}

/// One vector of `N` `f32` lanes. All methods are `unsafe`: pointers must be valid for `N`
/// elements (no alignment needed) and the caller must run on a processor with the instruction set.
pub(crate) trait Lanes: Copy {
    const N: usize;
    /// Which lanes a masked load keeps.
    type Mask: Copy;
    /// The mask keeping the lanes `l` with `keep(l)`.
    unsafe fn mask(keep: impl Fn(usize) -> bool) -> Self::Mask;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// [`Lanes::load`] with the lanes outside `m` set to zero (all `N` elements must be readable).
    unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// Stores the lanes in `m` only.
    unsafe fn store_masked(self, p: *mut f32, m: Self::Mask);
    /// Every lane = `*p`.
    unsafe fn splat(p: *const f32) -> Self;
    /// `a·b + c`, one rounding.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{V16, V8};

/// Asks the processor to bring the cache line holding `p` into L1 (a hint: never faults, so `p`
/// may point anywhere).
#[inline(always)]
pub(crate) fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address (SSE is part of x86-64).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// AVX-512 vector.
    #[derive(Clone, Copy)]
    pub(crate) struct V16(__m512);
    /// AVX2 vector.
    #[derive(Clone, Copy)]
    pub(crate) struct V8(__m256);

    impl Lanes for V16 {
        const N: usize = 16;
        type Mask = __mmask16;
        #[inline(always)]
        unsafe fn mask(keep: impl Fn(usize) -> bool) -> Self::Mask {
            (0..16).filter(|&l| keep(l)).fold(0, |m, l| m | (1 << l))
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self {
            V16(_mm512_maskz_loadu_ps(m, p))
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            V16(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            V16(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn store_masked(self, p: *mut f32, m: Self::Mask) {
            _mm512_mask_storeu_ps(p, m, self.0)
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            V16(_mm512_set1_ps(*p))
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            V16(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
    }

    impl Lanes for V8 {
        const N: usize = 8;
        type Mask = __m256;
        #[inline(always)]
        unsafe fn mask(keep: impl Fn(usize) -> bool) -> Self::Mask {
            let bits: [f32; 8] = std::array::from_fn(|l| if keep(l) { f32::from_bits(!0) } else { 0.0 });
            _mm256_loadu_ps(bits.as_ptr())
        }
        #[inline(always)]
        unsafe fn load_masked(p: *const f32, m: Self::Mask) -> Self {
            V8(_mm256_and_ps(_mm256_loadu_ps(p), m))
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            V8(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            V8(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn store_masked(self, p: *mut f32, m: Self::Mask) {
            _mm256_maskstore_ps(p, _mm256_castps_si256(m), self.0)
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            V8(_mm256_set1_ps(*p))
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            V8(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
    }
}
