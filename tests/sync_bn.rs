//! Cross-replica BatchNorm on one replica equals burn's batch_norm_train: same output, mean,
//! variance and gradients (input, γ, β), for BatchNorm2d and BatchNorm1d shapes. This checks
//! the fused operation with its handwritten backward, and the reference built on the
//! differentiable `collective_sum`, without MPI; the
//! multi-replica behaviour is tested under mpirun in tests/distributed.rs.

use burn::tensor::module::batch_norm_train;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn randn(n: usize, seed: u64, scale: f32, shift: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| byol::layers::randn(&mut rng) * scale + shift).collect()
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.inner().try_to_vec_as::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check<const D: usize>(shape: [usize; D]) {
    let ad = Device::flex().autodiff();
    let c = shape[1];
    let n: usize = shape.iter().product();
    let x0 = randn(n, 1, 2.0, 0.7);
    let w = randn(n, 2, 1.0, 0.0); // weights of a loss Σ w·y, so gradients are not trivial
    let leaf = |v: Vec<f32>, s: [usize; D]| Tensor::<D>::from_data(TensorData::new(v, s), &ad).require_grad();
    let leaf1 = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [c]), &ad).require_grad();
    let wt = Tensor::<D>::from_data(TensorData::new(w, shape), &ad);

    let run = |mode: u8| {
        let (x, g, b) = (leaf(x0.clone(), shape), leaf1(randn(c, 3, 0.5, 1.0)), leaf1(randn(c, 4, 0.5, 0.0)));
        let group = byol::distributed::global();
        let (y, mean, var) = if mode > 0 {
            let o = if mode == 1 {
                byol::sync_bn::batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5, group)
            } else {
                byol::sync_bn::batch_norm_train_reference(x.clone(), g.clone(), b.clone(), 1e-5, group)
            };
            assert_eq!(o.count, n / c);
            (o.output, vals(o.mean), vals(o.variance))
        } else {
            let o = batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-5);
            (o.output, vals(o.mean), vals(o.variance))
        };
        let grads = (y.clone() * wt.clone()).sum().backward();
        let gx = vals(x.grad(&grads).unwrap());
        let gg = vals(g.grad(&grads).unwrap());
        let gb = vals(b.grad(&grads).unwrap());
        (vals(y), mean, var, gx, gg, gb)
    };
    let a = run(0);
    for mode in [1, 2] {
        let b = run(mode);
        let d = [
            max_diff(&a.0, &b.0),
            max_diff(&a.1, &b.1),
            max_diff(&a.2, &b.2),
            max_diff(&a.3, &b.3),
            max_diff(&a.4, &b.4),
            max_diff(&a.5, &b.5),
        ];
        let name = ["", "fused", "reference"][mode as usize];
        println!("{shape:?} {name}: max |Δ| output, mean, var, dx, dγ, dβ = {d:?}");
        assert!(d.iter().all(|&e| e < 2e-5), "{shape:?} {name}: {d:?}");
    }
    assert!(a.3.iter().any(|v| v.abs() > 1e-3), "the input gradient should not vanish");
}

#[test]
fn sync_batch_norm_on_one_replica_equals_batch_norm() {
    check([4, 3, 5, 6]);
    check([6, 5]);
}
