//! Shared by the convolution timing examples (`#[path]` module): the three passes of
//! src/conv.rs on fixed inputs of one geometry, each the median of `runs` calls, in ms.
use byol::conv::{self, ConvGeom};

#[path = "timing.rs"]
mod timing;

/// (forward, input gradient, weight gradient).
pub fn conv_passes_ms(g: &ConvGeom, runs: usize) -> (f64, f64, f64) {
    let x: Vec<f32> = (0..g.n * g.c * g.h * g.w).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let w: Vec<f32> = (0..g.o * g.c * g.k * g.k).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
    let dy: Vec<f32> = (0..g.n * g.o * g.oh * g.ow).map(|i| (i % 11) as f32 * 0.1 - 0.5).collect();
    let f = timing::median_ms(runs, || drop(conv::forward(g, &x, &w)));
    let dx = timing::median_ms(runs, || drop(conv::backward_input(g, &dy, &w)));
    let dw = timing::median_ms(runs, || drop(conv::backward_weight(g, &x, &dy)));
    (f, dx, dw)
}
