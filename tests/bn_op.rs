//! The fused training-mode BatchNorm (+ReLU) of src/bn_op.rs against burn's own composition
//! (`batch_norm_train`, then `relu`): output, statistics and the gradients of x, γ and β through
//! autodiff, for BatchNorm2d and BatchNorm1d shapes, plus thread-count independence.

use burn::tensor::activation::relu;
use burn::tensor::module::batch_norm_train as burn_bn;
use burn::tensor::{Device, Distribution, Tensor};

/// Deterministic pseudo-normal data (sum of uniforms from a fixed LCG), so failures reproduce.
fn data<const D: usize>(dims: [usize; D], seed: u64, mean: f64, std: f64) -> Tensor<D> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (mean + std * ((0..12).map(|_| uniform()).sum::<f64>() - 6.0)) as f32).collect();
    Tensor::from_data(burn::tensor::TensorData::new(v, dims), &Device::flex())
}

fn max_rel<const D: usize>(a: &Tensor<D>, b: &Tensor<D>) -> f32 {
    let d: f32 = (a.clone() - b.clone()).abs().max().into_scalar();
    let s: f32 = b.clone().abs().max().into_scalar();
    d / s.max(1e-12)
}

fn check<const D: usize>(dims: [usize; D], act: bool, mu: f64) {
    let c = dims[1];
    let x = data(dims, 1, mu, 2.0);
    let gamma = data([c], 2, 0.0, 1.0);
    let beta = data([c], 3, 0.0, 1.0);
    let g = data(dims, 4, 0.0, 1.0);
    let run = |ours: bool| {
        let xa = x.clone().autodiff().require_grad();
        let ga = gamma.clone().autodiff().require_grad();
        let ba = beta.clone().autodiff().require_grad();
        let (y, mean, var) = if ours {
            byol::bn_op::batch_norm_train(xa.clone(), ga.clone(), ba.clone(), 1e-5, act)
        } else {
            let o = burn_bn(xa.clone(), ga.clone(), ba.clone(), 1e-5);
            let y = if act { relu(o.output) } else { o.output };
            (y, o.mean.inner(), o.variance.inner())
        };
        let grads = (y.clone() * g.clone().autodiff()).sum().backward();
        let (dx, dg, db) = (xa.grad(&grads).expect("dx"), ga.grad(&grads).expect("dγ"), ba.grad(&grads).expect("dβ"));
        (y.inner(), mean, var, dx, dg, db)
    };
    let ours = run(true);
    let burn = run(false);
    let case = format!("{dims:?} relu {act} mean {mu}");
    let e = max_rel(&ours.0, &burn.0);
    assert!(e < 1e-5, "{case}: output differs by {e:e}");
    for (what, a, b) in
        [("mean", &ours.1, &burn.1), ("variance", &ours.2, &burn.2), ("dγ", &ours.4, &burn.4), ("dβ", &ours.5, &burn.5)]
    {
        let e = max_rel(a, b);
        assert!(e < 1e-5, "{case}: {what} differs by {e:e}");
    }
    let e = max_rel(&ours.3, &burn.3);
    println!("{case}: dx {e:e}");
    assert!(e < 1e-5, "{case}: input gradient differs by {e:e}");
}

#[test]
fn matches_burn_batch_norm_and_relu() {
    // A mean far from 0 relative to the spread (|μ| ≫ σ) is where a careless formula cancels.
    for (act, mu) in [(false, 0.5), (true, 0.5), (false, 40.0), (true, -40.0)] {
        check([4, 3, 5, 6], act, mu);
        check([5, 8, 1, 1], act, mu);
        check([32, 16], act, mu);
        check([3, 2, 9, 9], act, mu);
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let dev = Device::flex();
    let x = Tensor::<4>::random([6, 5, 7, 7], Distribution::Normal(1.0, 3.0), &dev);
    let gamma = Tensor::<1>::random([5], Distribution::Normal(0.0, 1.0), &dev);
    let beta = Tensor::<1>::random([5], Distribution::Normal(0.0, 1.0), &dev);
    let g = Tensor::<4>::random([6, 5, 7, 7], Distribution::Normal(0.0, 1.0), &dev);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            let xa = x.clone().autodiff().require_grad();
            let ga = gamma.clone().autodiff().require_grad();
            let (y, _, var) =
                byol::bn_op::batch_norm_train(xa.clone(), ga.clone(), beta.clone().autodiff(), 1e-5, true);
            let grads = (y.clone() * g.clone().autodiff()).sum().backward();
            let bits = |t: Tensor<4>| {
                t.into_data().try_to_vec::<f32>().expect("f32").iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let dg = ga.grad(&grads).expect("dγ").into_data().try_to_vec::<f32>().expect("f32");
            (bits(y.inner()), bits(xa.grad(&grads).expect("dx")), dg, var.into_data().try_to_vec::<f32>().expect("f32"))
        })
    };
    let (one, three) = (run(1), run(3));
    assert!(one == three, "BatchNorm results changed with the thread count");
}
