//! Times the CPU max pooling (src/pool_op.rs), forward and backward, at the stem pooling of the
//! `fashion-mnist` preset (3×3, stride 2, padding 1 over 128 × 16 × 14 × 14).
//! `cargo run --release --example pool_bench [batch]`
use burn::tensor::{Device, Distribution, Tensor};
#[path = "common/timing.rs"]
mod timing;

fn median(f: impl FnMut()) -> f64 {
    timing::median_ms(9, f)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(128);
    let dev = Device::flex();
    let x = Tensor::<4>::random([n, 16, 14, 14], Distribution::Normal(0.0, 1.0), &dev);
    let fwd = median(|| {
        let _ = byol::pool_op::max_pool2d(x.clone(), 3, 2, 1).into_data();
    });
    let both = median(|| {
        let xa = x.clone().autodiff().require_grad();
        let grads = byol::pool_op::max_pool2d(xa.clone(), 3, 2, 1).sum().backward();
        let _ = xa.grad(&grads).expect("grad").into_data();
    });
    println!("max pool 3×3/2 over [{n}, 16, 14, 14]: forward {fwd:.2} ms, forward + backward {both:.2} ms");
}
