//! Times the three convolution passes of src/conv.rs at every layer geometry of a ResNet-18
//! (ImageNet stem, width 16, 28 px, batch 128: the `fashion-mnist` preset), single call each.
//! `cargo run --example conv_layers [batch] [cifar WIDTH]` (threads: RAYON_NUM_THREADS); with
//! `cifar WIDTH`, the layers of the CIFAR-stem ResNet-18 of that width at 32 px instead.
use byol::conv::ConvGeom;
#[path = "common/conv_passes.rs"]
mod conv_passes;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    // (c, h, o, k, stride, pad, count per forward pass)
    let cifar: Option<usize> = match std::env::args().nth(2).as_deref() {
        Some("cifar") => Some(std::env::args().nth(3).and_then(|a| a.parse().ok()).unwrap_or(16)),
        _ => None,
    };
    let fm = [
        (1, 28, 16, 7, 2, 3, 1),
        (16, 7, 16, 3, 1, 1, 4),
        (16, 7, 32, 3, 2, 1, 1),
        (32, 4, 32, 3, 1, 1, 3),
        (16, 7, 32, 1, 2, 0, 1),
        (32, 4, 64, 3, 2, 1, 1),
        (64, 2, 64, 3, 1, 1, 3),
        (32, 4, 64, 1, 2, 0, 1),
        (64, 2, 128, 3, 2, 1, 1),
        (128, 1, 128, 3, 1, 1, 3),
        (64, 2, 128, 1, 2, 0, 1),
    ];
    let layers: Vec<(usize, usize, usize, usize, usize, usize, usize)> = match cifar {
        None => fm.to_vec(),
        Some(w) => vec![
            (3, 32, w, 3, 1, 1, 1),
            (w, 32, w, 3, 1, 1, 4),
            (w, 32, 2 * w, 3, 2, 1, 1),
            (2 * w, 16, 2 * w, 3, 1, 1, 3),
            (w, 32, 2 * w, 1, 2, 0, 1),
            (2 * w, 16, 4 * w, 3, 2, 1, 1),
            (4 * w, 8, 4 * w, 3, 1, 1, 3),
            (2 * w, 16, 4 * w, 1, 2, 0, 1),
            (4 * w, 8, 8 * w, 3, 2, 1, 1),
            (8 * w, 4, 8 * w, 3, 1, 1, 3),
            (4 * w, 8, 8 * w, 1, 2, 0, 1),
        ],
    };
    let (mut tf, mut tdx, mut tdw) = (0.0, 0.0, 0.0);
    println!("| c | h | o | k | s | × | fwd ms | dx ms | dw ms |");
    for (c, h, o, k, s, p, count) in layers {
        let g = ConvGeom::new([n, c, h, h], [o, c, k, k], s, p).expect("geometry");
        let (f, dx, dw) = conv_passes::conv_passes_ms(&g, 5);
        let m = count as f64;
        (tf, tdx, tdw) = (tf + f * m, tdx + dx * m, tdw + dw * m);
        println!("| {c} | {h} | {o} | {k} | {s} | {count} | {f:.2} | {dx:.2} | {dw:.2} |");
    }
    println!("one view, online encoder: forward {tf:.1} ms, input grads {tdx:.1} ms, weight grads {tdw:.1} ms");
}
