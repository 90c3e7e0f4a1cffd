//! Target network update (paper §3.1): ξ ← τ·ξ + (1 − τ)·θ after every optimizer step, on
//! parameters only — BatchNorm running statistics of the target are its own.

use crate::cpu_ops::on_flex_f32;
use crate::params::ParamSet;

/// Moves every trainable tensor of `target` towards the online tensor of the same name.
/// `online` may hold more tensors (the predictor); only the target's names are used.
pub fn update(target: &mut ParamSet, online: &ParamSet, tau: f64) {
    let tau = tau as f32;
    for t in target.iter_mut() {
        if !t.kind.trainable() {
            continue;
        }
        let o = online.param(&t.name).value.clone().inner();
        t.value = if on_flex_f32(&o) && on_flex_f32(&t.value) && o.dims() == t.value.dims() {
            crate::update_op::ema(t.value.clone(), o, tau)
        } else {
            t.value.clone() * tau + o * (1.0 - tau)
        };
    }
}
