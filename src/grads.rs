//! Gradients by parameter name, detached from the autodiff graph: what the optimizers consume,
//! what gradient accumulation sums and what a data-parallel all-reduce averages.

use std::collections::BTreeMap;

use burn::tensor::{Gradients, Tensor};

use crate::params::ParamSet;

/// Gradient of every trainable tensor that received one, keyed by name (flat, inner backend).
#[derive(Clone, Debug, Default)]
pub struct GradMap {
    pub grads: BTreeMap<String, Tensor<1>>,
}

impl GradMap {
    /// Takes the gradients of the trainable tensors of `ps` out of a backward result.
    pub fn collect(ps: &ParamSet, grads: &Gradients) -> Self {
        let mut out = BTreeMap::new();
        for p in ps.iter().filter(|p| p.kind.trainable()) {
            if let Some(g) = p.value.grad(grads) {
                out.insert(p.name.clone(), g);
            }
        }
        Self { grads: out }
    }

    /// Adds `other` into `self` (gradient accumulation over micro-batches).
    pub fn accumulate(&mut self, other: GradMap) {
        for (k, g) in other.grads {
            let sum = match self.grads.remove(&k) {
                Some(a) => a + g,
                None => g,
            };
            self.grads.insert(k, sum);
        }
    }

    /// Multiplies every gradient by `s` (e.g. 1/N after accumulating N micro-batches).
    pub fn scale(&mut self, s: f32) {
        for g in self.grads.values_mut() {
            *g = g.clone() * s;
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor<1>> {
        self.grads.get(name)
    }
}
