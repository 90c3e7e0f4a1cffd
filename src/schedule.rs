//! Schedules of BYOL training (paper §3.3, App. J): the target decay rate τ and the learning rate.

use std::f64::consts::PI;

/// τ at step k of K: 1 − (1 − τ_base)·(cos(πk/K) + 1)/2 — τ_base at k = 0, 1 at k = K.
pub fn tau(tau_base: f64, step: usize, total_steps: usize) -> f64 {
    if total_steps == 0 {
        return 1.0;
    }
    let k = step.min(total_steps) as f64 / total_steps as f64;
    1.0 - (1.0 - tau_base) * ((PI * k).cos() + 1.0) / 2.0
}

/// Learning rate scaled linearly with the batch size: base × batch / 256 (paper §3.3).
pub fn scaled_lr(base_lr: f64, batch_size: usize) -> f64 {
    base_lr * batch_size as f64 / 256.0
}

/// Linear warmup from 0 to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupCosine {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl WarmupCosine {
    /// Learning rate used for optimizer step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps);
        if decay_steps == 0 {
            return self.peak;
        }
        let t = (step - self.warmup_steps).min(decay_steps) as f64 / decay_steps as f64;
        self.peak * 0.5 * (1.0 + (PI * t).cos())
    }
}
