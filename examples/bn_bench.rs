//! Times the fused training-mode BatchNorm+ReLU of src/bn_op.rs (forward and backward through
//! autodiff) at the `fashion-mnist` preset's shapes, against burn's composition.
//! `cargo run --example bn_bench` (threads: RAYON_NUM_THREADS).
use burn::tensor::activation::relu;
use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn median(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[3]
}

fn run<const D: usize>(dims: [usize; D]) {
    let dev = Device::flex();
    let c = dims[1];
    let x = Tensor::<D>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
    let g = Tensor::<D>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
    let gamma = Tensor::<1>::ones([c], &dev);
    let beta = Tensor::<1>::zeros([c], &dev);
    let step = |fused: bool| {
        let xa = x.clone().autodiff().require_grad();
        let ga = gamma.clone().autodiff().require_grad();
        let ba = beta.clone().autodiff().require_grad();
        let y = if fused {
            byol::bn_op::batch_norm_train(xa.clone(), ga, ba, 1e-5, true).0
        } else {
            relu(batch_norm_train(xa.clone(), ga, ba, 1e-5).output)
        };
        let grads = (y * g.clone().autodiff()).sum().backward();
        let _ = xa.grad(&grads).expect("dx").into_data();
    };
    let fused = median(|| step(true));
    let burn = median(|| step(false));
    let n: usize = dims.iter().product();
    println!("{dims:?}: fused {fused:.2} ms ({:.2} ns/element), burn {burn:.2} ms", fused * 1e6 / n as f64);
}

fn main() {
    run([128, 16, 14, 14]);
    run([128, 16, 7, 7]);
    run([128, 32, 4, 4]);
    run([128, 64, 2, 2]);
    run([128, 128, 1, 1]);
    run([128, 512]);
}
