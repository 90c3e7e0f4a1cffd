//! Optimizers over a [`ParamSet`]: the common trait, checkpointable state, and SGD (with
//! Nesterov momentum) and AdamW with PyTorch's arithmetic, for the evaluation protocols
//! (linear probe and fine-tuning, paper App. C). LARS for pretraining lives in `lars.rs`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use burn::tensor::{Device, Tensor, TensorData};

use crate::grads::GradMap;
use crate::params::{to_vec, ParamSet};

/// An optimizer updating the trainable tensors of a parameter set from named gradients.
pub trait Optimizer {
    /// One update with learning rate `lr`. Tensors without a gradient are left unchanged.
    fn step(&mut self, ps: &mut ParamSet, grads: &GradMap, lr: f64);
    /// The optimizer's state as host values (for checkpoints).
    fn state(&self) -> OptimState;
    /// Restores a state written by [`Optimizer::state`].
    fn load_state(&mut self, state: &OptimState, device: &Device) -> Result<()>;
}

/// Host copy of an optimizer state: a step counter and named per-parameter slots, stored as
/// `"<slot>/<param name>"`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimState {
    pub step: u64,
    pub tensors: BTreeMap<String, Vec<f32>>,
}

impl OptimState {
    pub fn from_slots<'a>(
        step: u64,
        slots: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, Tensor<1>>)>,
    ) -> Self {
        let mut tensors = BTreeMap::new();
        for (slot, map) in slots {
            for (name, t) in map {
                tensors.insert(format!("{slot}/{name}"), to_vec(t));
            }
        }
        Self { step, tensors }
    }

    /// The tensors of one slot, on `device` (inner backend).
    pub fn slot(&self, slot: &str, device: &Device) -> Result<BTreeMap<String, Tensor<1>>> {
        let prefix = format!("{slot}/");
        let inner = device.clone().inner();
        Ok(self
            .tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .map(|n| (n.to_string(), Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &inner)))
            })
            .collect())
    }
}

fn write_back(p: &mut crate::params::Param, new: Tensor<1>) {
    p.value = if p.value.is_autodiff() { new.autodiff().require_grad() } else { new };
}

/// SGD as `torch.optim.SGD`: g ← g + wd·p; b ← m·b + g (b = g at the first step);
/// g ← g + m·b (Nesterov) or g ← b; p ← p − lr·g.
#[derive(Clone, Debug)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    buf: BTreeMap<String, Tensor<1>>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32, nesterov: bool) -> Self {
        Self { momentum, weight_decay, nesterov, buf: BTreeMap::new() }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, ps: &mut ParamSet, grads: &GradMap, lr: f64) {
        for p in ps.iter_mut().filter(|p| p.kind.trainable()) {
            let Some(g) = grads.get(&p.name) else { continue };
            let w = p.value.clone().inner();
            let mut g = g.clone();
            if self.weight_decay != 0.0 {
                g = g + w.clone() * self.weight_decay;
            }
            if self.momentum != 0.0 {
                let b = match self.buf.remove(&p.name) {
                    Some(b) => b * self.momentum + g.clone(),
                    None => g.clone(),
                };
                g = if self.nesterov { g + b.clone() * self.momentum } else { b.clone() };
                self.buf.insert(p.name.clone(), b);
            }
            write_back(p, w - g * lr as f32);
        }
    }

    fn state(&self) -> OptimState {
        OptimState::from_slots(0, [("momentum", &self.buf)])
    }

    fn load_state(&mut self, state: &OptimState, device: &Device) -> Result<()> {
        self.buf = state.slot("momentum", device)?;
        Ok(())
    }
}

/// AdamW as `torch.optim.AdamW`: p ← p·(1 − lr·wd); Adam update with bias correction.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    t: u64,
    m: BTreeMap<String, Tensor<1>>,
    v: BTreeMap<String, Tensor<1>>,
}

impl AdamW {
    pub fn new(weight_decay: f32) -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, t: 0, m: BTreeMap::new(), v: BTreeMap::new() }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, ps: &mut ParamSet, grads: &GradMap, lr: f64) {
        self.t += 1;
        let lr = lr as f32;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        for p in ps.iter_mut().filter(|p| p.kind.trainable()) {
            let Some(g) = grads.get(&p.name) else { continue };
            let w = p.value.clone().inner() * (1.0 - lr * self.weight_decay);
            let m = match self.m.remove(&p.name) {
                Some(m) => m * self.beta1 + g.clone() * (1.0 - self.beta1),
                None => g.clone() * (1.0 - self.beta1),
            };
            let v = match self.v.remove(&p.name) {
                Some(v) => v * self.beta2 + g.clone().powi_scalar(2) * (1.0 - self.beta2),
                None => g.clone().powi_scalar(2) * (1.0 - self.beta2),
            };
            let denom = (v.clone() / bc2).sqrt() + self.eps;
            let new = w - (m.clone() / bc1) / denom * lr;
            self.m.insert(p.name.clone(), m);
            self.v.insert(p.name.clone(), v);
            write_back(p, new);
        }
    }

    fn state(&self) -> OptimState {
        OptimState::from_slots(self.t, [("m", &self.m), ("v", &self.v)])
    }

    fn load_state(&mut self, state: &OptimState, device: &Device) -> Result<()> {
        self.t = state.step;
        self.m = state.slot("m", device).context("AdamW state")?;
        self.v = state.slot("v", device)?;
        Ok(())
    }
}
