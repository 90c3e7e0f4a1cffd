//! LARS (You et al. 2017) exactly as BYOL's JAX code applies it (paper §3.3, App. J):
//! g ← g + wd·p; g ← g·η‖p‖/‖g‖ (ratio 1 where either norm is 0); μ ← m·μ + g; p ← p − lr·μ.
//! Biases and every BatchNorm parameter — the heads' too — skip weight decay and trust ratio.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use crate::cpu_ops::on_flex_f32;
use crate::grads::GradMap;
use crate::optim::{OptimState, Optimizer};
use crate::params::ParamSet;
use crate::update_op::{self, LarsStep};

/// LARS hyper-parameters (paper: η = 1e-3, momentum 0.9, weight decay 1.5e-6).
#[derive(Clone, Debug)]
pub struct Lars {
    pub momentum: f32,
    pub weight_decay: f32,
    pub eta: f32,
    momentum_buf: BTreeMap<String, Tensor<1>>,
}

impl Lars {
    pub fn new(momentum: f32, weight_decay: f32, eta: f32) -> Self {
        Self { momentum, weight_decay, eta, momentum_buf: BTreeMap::new() }
    }

    /// Names of the tensors of `ps` that get neither weight decay nor trust ratio.
    pub fn excluded(ps: &ParamSet) -> Vec<String> {
        ps.iter().filter(|p| p.kind.lars_excluded()).map(|p| p.name.clone()).collect()
    }
}

fn norm(t: &Tensor<1>) -> Tensor<1> {
    t.clone().powi_scalar(2).sum().sqrt()
}

impl Lars {
    /// One update from burn's tensor operations (GPU backends; the CPU takes
    /// [`update_op::lars`], the same arithmetic in one pass): returns (parameter, momentum).
    pub(crate) fn composed(
        &self,
        w: Tensor<1>,
        mut g: Tensor<1>,
        prev: Option<Tensor<1>>,
        lr: f32,
        excluded: bool,
    ) -> (Tensor<1>, Tensor<1>) {
        if !excluded {
            g = g + w.clone() * self.weight_decay;
            let (pn, gn) = (norm(&w), norm(&g));
            let valid = pn.clone().greater_elem(0.0).bool_and(gn.clone().greater_elem(0.0));
            let ratio = pn.ones_like().mask_where(valid, pn * self.eta / gn.clamp_min(1e-30));
            g = g * ratio;
        }
        let mu = match prev {
            Some(m) => m * self.momentum + g,
            None => g,
        };
        (w - mu.clone() * lr, mu)
    }
}

impl Optimizer for Lars {
    fn step(&mut self, ps: &mut ParamSet, grads: &GradMap, lr: f64) {
        let lr = lr as f32;
        for p in ps.iter_mut().filter(|p| p.kind.trainable()) {
            let Some(g) = grads.get(&p.name) else { continue };
            let w = p.value.clone().inner();
            let prev = self.momentum_buf.remove(&p.name);
            let (new, mu) = if on_flex_f32(&w) {
                let step = LarsStep {
                    lr,
                    momentum: self.momentum,
                    weight_decay: self.weight_decay,
                    eta: self.eta,
                    excluded: p.kind.lars_excluded(),
                };
                update_op::lars(w, g.clone(), prev, step)
            } else {
                self.composed(w, g.clone(), prev, lr, p.kind.lars_excluded())
            };
            self.momentum_buf.insert(p.name.clone(), mu);
            p.value = if p.value.is_autodiff() { new.autodiff().require_grad() } else { new };
        }
    }

    fn state(&self) -> OptimState {
        OptimState::from_slots(0, [("momentum", &self.momentum_buf)])
    }

    fn load_state(&mut self, state: &OptimState, device: &burn::tensor::Device) -> anyhow::Result<()> {
        self.momentum_buf = state.slot("momentum", device)?;
        Ok(())
    }
}
