//! Times the fused training-mode BatchNorm+ReLU of src/bn_op.rs: forward alone, and forward +
//! backward through autodiff, at the CIFAR ResNet-18 (width 16, batch 64) and `fashion-mnist`
//! preset shapes. `cargo run --release --example bn_bench` (threads: RAYON_NUM_THREADS).
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

fn run(dims: [usize; 4]) {
    let dev = Device::flex();
    let c = dims[1];
    let x = Tensor::<4>::random(dims, Distribution::Normal(0.5, 2.0), &dev);
    let g = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
    let gamma = Tensor::<1>::ones([c], &dev);
    let beta = Tensor::<1>::zeros([c], &dev);
    let fwd = median(|| {
        let y = byol::bn_op::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, true).0;
        let _ = y.into_data();
    });
    let both = median(|| {
        let xa = x.clone().autodiff().require_grad();
        let ga = gamma.clone().autodiff().require_grad();
        let ba = beta.clone().autodiff().require_grad();
        let y = byol::bn_op::batch_norm_train(xa.clone(), ga, ba, 1e-5, true).0;
        let grads = (y * g.clone().autodiff()).sum().backward();
        let _ = xa.grad(&grads).expect("dx").into_data();
    });
    let n: usize = dims.iter().product();
    println!("{dims:?}: forward {fwd:.2} ms ({:.2} ns/element), forward + backward {both:.2} ms", fwd * 1e6 / n as f64);
}

fn main() {
    run([64, 64, 32, 32]);
    run([64, 128, 16, 16]);
    run([64, 512, 4, 4]);
}
