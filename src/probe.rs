//! Online linear probe (JAX BYOL, solo-learn): a linear classifier trained during pretraining on
//! the stop-gradient representation sg(y), a cheap accuracy signal every epoch. It never sends
//! gradients into the encoder.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::grads::GradMap;
use crate::layers::{add_linear, linear};
use crate::optim::{Optimizer, Sgd};
use crate::params::{to_vec, ParamSet};

/// A linear classifier `fc` with its SGD optimizer.
pub struct OnlineProbe {
    pub params: ParamSet,
    pub opt: Sgd,
    pub lr: f64,
    pub num_classes: usize,
}

/// One-hot matrix `[N, C]` of labels.
pub fn one_hot(labels: &[usize], num_classes: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; labels.len() * num_classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * num_classes + l] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [labels.len(), num_classes]), device)
}

/// Mean softmax cross-entropy of `logits` against `labels`.
pub fn cross_entropy(logits: Tensor<2>, labels: &[usize]) -> Tensor<1> {
    let [n, c] = logits.dims();
    let target = one_hot(labels, c, &logits.device());
    (log_softmax(logits, 1) * target).sum().neg() / n as f32
}

/// Index of the largest value of each row.
pub fn argmax_rows(values: &[f32], cols: usize) -> Vec<usize> {
    values
        .chunks(cols)
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
        .collect()
}

impl OnlineProbe {
    pub fn new(dim: usize, num_classes: usize, lr: f64, seed: u64, device: &Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5052_4f42);
        let mut params = ParamSet::new();
        add_linear(&mut params, "fc", dim, num_classes, true, &mut rng, &device.clone().inner());
        let params = params.to_device(device);
        Self { params, opt: Sgd::new(0.9, 0.0, false), lr, num_classes }
    }

    /// One SGD step on detached features; returns (loss, correct predictions).
    pub fn step(&mut self, features: Tensor<2>, labels: &[usize]) -> (f32, usize) {
        let x = features.inner().autodiff();
        let logits = linear(&self.params, "fc", x);
        let preds = argmax_rows(&to_vec(&logits.clone().inner()), self.num_classes);
        let correct = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
        let loss = cross_entropy(logits, labels);
        let mut grads = GradMap::collect(&self.params, &loss.backward());
        // Data-parallel: the gradient of the mean loss over every replica's shard.
        if let Err(e) = crate::distributed::average_gradients(&mut grads) {
            panic!("online probe: {e:#}");
        }
        self.opt.step(&mut self.params, &grads, self.lr);
        (loss.inner().into_scalar::<f32>(), correct)
    }
}
