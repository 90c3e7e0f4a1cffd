//! Times one convolution geometry (forward, input gradient, weight gradient), median of `reps`
//! calls: `conv_one BATCH CIN SIZE COUT [REPS] [STRIDE] [K]` (default a 3×3 stride-1 "same"
//! convolution; padding k/2; threads: RAYON_NUM_THREADS).
use byol::conv::ConvGeom;
#[path = "common/conv_passes.rs"]
mod conv_passes;

fn main() {
    byol::malloc_tuning::keep_freed_memory();
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let [n, c, h, o] = [0, 1, 2, 3].map(|i| a.get(i).copied().unwrap_or([64, 64, 32, 64][i]));
    let reps = a.get(4).copied().unwrap_or(15);
    let (stride, k) = (a.get(5).copied().unwrap_or(1), a.get(6).copied().unwrap_or(3));
    let g = ConvGeom::new([n, c, h, h], [o, c, k, k], stride, k / 2).expect("geometry");
    let (f, dx, dw) = conv_passes::conv_passes_ms(&g, reps);
    let gf = 2.0 * g.macs() as f64 / 1e6;
    println!(
        "{n}×{c}×{h}² → {o} ({k}×{k}, stride {stride}): fwd {f:.2} ms ({:.0} GFLOP/s), dx {dx:.2} ({:.0}), dw {dw:.2} ({:.0})",
        gf / f,
        gf / dx,
        gf / dw
    );
}
