//! Times single ops (conv2d forward/backward, BatchNorm) at the shapes of the width-16 CIFAR ResNet-18.
use burn::tensor::module::{batch_norm_train, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut v = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[2]
}

fn main() {
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    for (c, s) in [(16usize, 32usize), (32, 16), (64, 8), (128, 4)] {
        let x = Tensor::<4>::random([64, c, s, s], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<4>::random([c, c, 3, 3], Distribution::Normal(0.0, 0.1), &dev);
        let opt = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let flops = 2.0 * 64.0 * (c * c * 9 * s * s) as f64;
        let f = time(|| {
            let y = conv2d(x.clone(), w.clone(), None, opt());
            let _ = y.into_data();
        });
        let b = time(|| {
            let xa = x.clone().autodiff().require_grad();
            let wa = w.clone().autodiff().require_grad();
            let y = conv2d(xa.clone(), wa.clone(), None, opt());
            let g = y.sum().backward();
            let _ = xa.grad(&g).unwrap().into_data();
            let _ = wa.grad(&g).unwrap().into_data();
        });
        let y1 = conv2d(x.clone(), w.clone(), None, opt());
        let y2 = byol::conv_op::conv2d(x.clone(), w.clone(), 1, 1);
        let err: f32 = (y1 - y2).abs().max().into_scalar();
        let f2 = time(|| {
            let _ = byol::conv_op::conv2d(x.clone(), w.clone(), 1, 1).into_data();
        });
        let b2 = time(|| {
            let xa = x.clone().autodiff().require_grad();
            let wa = w.clone().autodiff().require_grad();
            let y = byol::conv_op::conv2d(xa.clone(), wa.clone(), 1, 1);
            let g = y.sum().backward();
            let _ = xa.grad(&g).unwrap().into_data();
            let _ = wa.grad(&g).unwrap().into_data();
        });
        let geo = byol::conv::ConvGeom::new([64, c, s, s], [c, c, 3, 3], 1, 1).unwrap();
        let xv: Vec<f32> = x.clone().into_data().try_to_vec::<f32>().unwrap();
        let wv: Vec<f32> = w.clone().into_data().try_to_vec::<f32>().unwrap();
        let kf = time(|| {
            let _ = byol::conv::forward(&geo, &xv, &wv);
        });
        let kx = time(|| {
            let _ = byol::conv::backward_input(&geo, &xv, &wv);
        });
        let kw = time(|| {
            let _ = byol::conv::backward_weight(&geo, &xv, &xv);
        });
        println!("   kernels: fwd {kf:.2} dx {kx:.2} dw {kw:.2} ms");
        println!("   ours: err {err:.2e} fwd {f2:7.2} ms  fwd+bwd {b2:7.2} ms");
        let g = Tensor::<1>::ones([c], &ad).require_grad();
        let be = Tensor::<1>::zeros([c], &ad).require_grad();
        let bn = time(|| {
            let out = batch_norm_train(x.clone().autodiff(), g.clone(), be.clone(), 1e-5);
            let _ = out.output.inner().into_data();
        });
        let bnb = time(|| {
            let xa = x.clone().autodiff().require_grad();
            let out = batch_norm_train(xa.clone(), g.clone(), be.clone(), 1e-5);
            let gr = out.output.sum().backward();
            let _ = xa.grad(&gr).unwrap().into_data();
        });
        let relu = time(|| {
            let _ = burn::tensor::activation::relu(x.clone()).into_data();
        });
        println!(
            "c={c:4} s={s:3}: conv fwd {f:7.2} ms ({:.1} GF/s)  fwd+bwd {b:7.2} ms  bn fwd {bn:6.2}  bn fwd+bwd {bnb:6.2}  relu {relu:5.2}",
            flops / f / 1e6
        );
    }
}
