//! The CPU training step runs the online and target forwards side by side, and each
//! convolution's two gradients side by side. That must not change a single bit: the step's loss,
//! gradients and BatchNorm running statistics (online and target) must equal those of the plain
//! sequential step (online view 1, online view 2, target view 1, target view 2, backward), with
//! 1, 2 or 3 threads.

use burn::tensor::{Device, Distribution, Tensor};
use byol::byol::{Byol, ByolConfig};
use byol::grads::GradMap;
use byol::heads::MlpConfig;
use byol::loss::regression_loss;
use byol::params::{to_vec, ParamSet};
use byol::resnet::{ResNetConfig, Stem};

/// Everything a step produces or changes: loss, every gradient, every online and target buffer.
#[derive(Debug, PartialEq)]
struct Outcome {
    loss: u32,
    grads: Vec<(String, Vec<u32>)>,
    buffers: Vec<(String, Vec<u32>)>,
}

fn bits(v: Vec<f32>) -> Vec<u32> {
    v.into_iter().map(f32::to_bits).collect()
}

fn buffers(prefix: &str, ps: &ParamSet) -> Vec<(String, Vec<u32>)> {
    ps.iter().filter(|p| !p.kind.trainable()).map(|p| (format!("{prefix}{}", p.name), bits(to_vec(&p.value)))).collect()
}

fn outcome(model: &Byol, loss: f32, grads: &GradMap) -> Outcome {
    let grads = model
        .online
        .iter()
        .filter_map(|p| grads.get(&p.name).map(|g| (p.name.clone(), bits(to_vec(g)))))
        .collect::<Vec<_>>();
    assert!(grads.len() > 60, "too few gradients: {}", grads.len());
    let mut b = buffers("online.", &model.online);
    b.extend(buffers("target.", &model.target));
    Outcome { loss: loss.to_bits(), grads, buffers: b }
}

fn model() -> Byol {
    let cfg = ByolConfig {
        encoder: ResNetConfig { depth: 18, width: 8, stem: Stem::Imagenet, in_channels: 1, zero_init_residual: false },
        projector: MlpConfig::new(32, 16),
        predictor: MlpConfig::new(32, 16),
    };
    Byol::new(cfg, 3, &Device::flex().autodiff()).expect("model")
}

/// The reference: each forward in turn, then one backward of the symmetrised loss.
fn sequential(v1: &Tensor<4>, v2: &Tensor<4>) -> Outcome {
    let mut m = model();
    let (_, _, q1) = m.online_forward(v1.clone().autodiff(), true);
    let (_, _, q2) = m.online_forward(v2.clone().autodiff(), true);
    let t1 = m.target_forward(v1.clone());
    let t2 = m.target_forward(v2.clone());
    let loss = regression_loss(q1, t2.autodiff()) + regression_loss(q2, t1.autodiff());
    let grads = GradMap::collect(&m.online, &loss.backward());
    outcome(&m, loss.inner().into_scalar::<f32>(), &grads)
}

#[test]
fn side_by_side_step_is_bit_identical_to_the_sequential_one() {
    let device = Device::flex();
    let shape = [12, 1, 28, 28];
    let v1 = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let v2 = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let reference = sequential(&v1, &v2);
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        let got = pool.install(|| {
            let mut m = model();
            let out = m.forward_backward(v1.clone(), v2.clone());
            outcome(&m, out.loss, &out.grads)
        });
        assert_eq!(got.loss, reference.loss, "{threads} threads: loss differs");
        for ((name, a), (_, b)) in got.grads.iter().zip(&reference.grads) {
            assert!(a == b, "{threads} threads: gradient of {name} differs");
        }
        for ((name, a), (_, b)) in got.buffers.iter().zip(&reference.buffers) {
            assert!(a == b, "{threads} threads: {name} differs");
        }
        assert_eq!(got, reference);
    }
}
