//! Runs a loop compiled for the processor's vector instructions (AVX-512 or AVX2), chosen at
//! run time ([`crate::simd::best`]), so the compiler's auto-vectorisation uses 8–16 lanes instead
//! of the 2–4 of the x86-64 baseline (SSE2) the crate is built for.
//!
//! [`vectorized`] hands a [`Kernel`] to a function compiled with `#[target_feature]`; its `run`
//! (and what that calls) is `#[inline(always)]`, so LLVM compiles it inside that function and
//! vectorises it there. (A closure would not do: LLVM inlines bottom-up and declines a closure
//! whose body has grown by its own inlining, which then stays SSE2 code — seen in `perf`.) Only
//! the instruction set changes, not the arithmetic: Rust neither reorders floating-point sums
//! nor fuses multiply-adds on its own, and these loops are element-wise (no reductions: the
//! sums are written out in [`crate::bn_sums`], whose test compares its paths bit for bit), so
//! every output element is the same float32 operations on every path.
//!
//! Used by the element-wise kernels that read and write whole activations
//! ([`crate::bn_kernels`]): on the 2-core AVX-512 machine their float64 sums ran on scalar
//! `cvtss2sd` before (BENCHMARKS.md, ninth session).

use crate::simd::{self, Isa};

/// A loop to compile for each instruction set. Implementations mark `run` `#[inline(always)]`
/// (without it `run` is compiled once, for the baseline, and called).
pub(crate) trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// `k.run()`, compiled for the best instruction set this processor has.
#[inline(always)]
pub(crate) fn vectorized<K: Kernel>(k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    match simd::best() {
        // SAFETY: `best` found these instruction sets on this processor.
        Some(Isa::Avx512) => return unsafe { avx512(k) },
        Some(Isa::Avx2) => return unsafe { avx2(k) },
        None => {}
    }
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn avx512<K: Kernel>(k: K) -> K::Output {
    k.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<K: Kernel>(k: K) -> K::Output {
    k.run()
}
