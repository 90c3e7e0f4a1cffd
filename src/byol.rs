//! The BYOL model (paper §3.1, Fig. 2): online network = encoder f → projector g → predictor q;
//! target network = encoder + projector, an exponential moving average of the online weights.
//!
//! Each view is forwarded separately, so BatchNorm statistics are per view (not over the
//! concatenation). The target runs BatchNorm in training mode (batch statistics) but lives on the
//! inner, non-autodiff backend: its forward records no graph (stop-gradient by construction).

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cpu_ops::{on_flex_f32, SIDE_BY_SIDE_MAX_MACS};
use crate::grads::GradMap;
use crate::heads::{self, MlpConfig};
use crate::loss::{normalized_std, regression_loss};
use crate::optim::Optimizer;
use crate::params::ParamSet;
use crate::resnet::{self, ResNetConfig};

/// Architecture of the BYOL networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByolConfig {
    pub encoder: ResNetConfig,
    pub projector: MlpConfig,
    pub predictor: MlpConfig,
}

impl Default for ByolConfig {
    /// The paper's heads: projector d → 4096 → 256, predictor 256 → 4096 → 256.
    fn default() -> Self {
        Self {
            encoder: ResNetConfig::default(),
            projector: MlpConfig::new(4096, 256),
            predictor: MlpConfig::new(4096, 256),
        }
    }
}

/// Online forward of one view through `online`: (y, z, q).
fn online_forward(
    cfg: &ByolConfig,
    online: &mut ParamSet,
    x: Tensor<4>,
    train: bool,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let y = resnet::forward(&cfg.encoder, online, "encoder.", x, train);
    let z = heads::forward(online, "projector.", y.clone(), train);
    let q = heads::forward(online, "predictor.", z.clone(), train);
    (y, z, q)
}

/// Target forward of one view through `target` (BatchNorm in training mode, inner backend: no
/// graph, so no gradient flows back — the paper's stop-gradient): z′.
fn target_forward(cfg: &ByolConfig, target: &mut ParamSet, x: Tensor<4>) -> Tensor<2> {
    let y = resnet::forward(&cfg.encoder, target, "encoder.", x.inner(), true);
    heads::forward(target, "projector.", y, true)
}

/// Online and target parameters. Online tensors are named `encoder.*`, `projector.*`,
/// `predictor.*`; the target holds `encoder.*` and `projector.*`.
#[derive(Clone, Debug)]
pub struct Byol {
    pub cfg: ByolConfig,
    pub online: ParamSet,
    pub target: ParamSet,
}

/// What one forward/backward of both views produced.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// Symmetrised loss L + L̃.
    pub loss: f32,
    /// Gradients of the online network.
    pub grads: GradMap,
    /// Detached representations y of view 1 (for the online linear probe).
    pub y1: Tensor<2>,
    /// Std of the L2-normalised online projections of view 1 (collapse monitor, ≈ 1/√d healthy).
    pub z_std: f32,
}

impl Byol {
    /// Builds the networks with weights drawn from `seed`; the target starts as an exact copy.
    /// `device` should be an autodiff device for training.
    pub fn new(cfg: ByolConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.encoder.validate()?;
        anyhow::ensure!(cfg.projector.hidden > 0 && cfg.projector.out > 0, "projector sizes must be positive");
        anyhow::ensure!(cfg.predictor.hidden > 0 && cfg.predictor.out > 0, "predictor sizes must be positive");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let host = device.clone().inner();
        let mut online = ParamSet::new();
        online.extend_prefixed("encoder.", resnet::init(&cfg.encoder, &mut rng, &host)?);
        online.extend_prefixed("projector.", heads::init(cfg.encoder.out_dim(), &cfg.projector, &mut rng, &host));
        online.extend_prefixed("predictor.", heads::init(cfg.projector.out, &cfg.predictor, &mut rng, &host));
        let online = online.to_device(device);
        let mut model = Self { cfg, online, target: ParamSet::new() };
        model.reset_target();
        Ok(model)
    }

    /// Target ← exact copy of the online encoder and projector (parameters and buffers).
    pub fn reset_target(&mut self) {
        let mut target = ParamSet::new();
        target.extend_prefixed("encoder.", self.online.sub("encoder."));
        target.extend_prefixed("projector.", self.online.sub("projector."));
        self.target = target.detached();
    }

    /// Online forward of one view: (y, z, q).
    pub fn online_forward(&mut self, x: Tensor<4>, train: bool) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        online_forward(&self.cfg, &mut self.online, x, train)
    }

    /// Target forward of one view (BatchNorm in training mode, no graph): z′.
    pub fn target_forward(&mut self, x: Tensor<4>) -> Tensor<2> {
        target_forward(&self.cfg, &mut self.target, x)
    }

    /// Encoder features only (evaluation: `train = false` uses running statistics).
    pub fn encode(&mut self, x: Tensor<4>, train: bool) -> Tensor<2> {
        resnet::forward(&self.cfg.encoder, &mut self.online, "encoder.", x, train)
    }

    /// Forward and backward of both views: loss = mean(2−2cos(q₁, z′₂)) + mean(2−2cos(q₂, z′₁)).
    pub fn forward_backward(&mut self, view1: Tensor<4>, view2: Tensor<4>) -> StepOutput {
        let device = self.online.iter().next().map(|p| p.value.device());
        let to_online = |x: Tensor<4>| match &device {
            Some(d) if d.is_autodiff() => x.autodiff(),
            _ => x,
        };
        let (a1, a2) = (to_online(view1.clone()), to_online(view2.clone()));
        let [n, _, h, w] = view1.dims();
        let concurrent = on_flex_f32(&view1)
            && crate::distributed::bn_group().is_none()
            && self.cfg.encoder.stage_conv_macs(n, h, w) <= SIDE_BY_SIDE_MAX_MACS;
        let (cfg, online, target) = (&self.cfg, &mut self.online, &mut self.target);
        let online_views = || {
            let (y1, z1, q1) = online_forward(cfg, online, a1, true);
            let (_, _, q2) = online_forward(cfg, online, a2, true);
            (y1, z1, q1, q2)
        };
        let target_views = || (target_forward(cfg, target, view1), target_forward(cfg, target, view2));
        // The online and target networks share nothing in the forward pass, so on the CPU they
        // run side by side (each view's BatchNorm running statistics still update in order, and
        // every kernel's result is independent of threads, so the step is bit-identical to the
        // sequential one). Not with cross-replica BatchNorm: its collectives must run in the
        // same order on every rank; not for large networks, whose convolutions keep every
        // thread busy already (SIDE_BY_SIDE_MAX_MACS). GPU backends queue the work anyway.
        let ((y1, z1, q1, q2), (t1, t2)) =
            if concurrent { rayon::join(online_views, target_views) } else { (online_views(), target_views()) };
        let z_std = normalized_std(z1);
        let loss = regression_loss(q1, t2.autodiff()) + regression_loss(q2, t1.autodiff());
        let grads = loss.backward();
        let grads = GradMap::collect(&self.online, &grads);
        let loss = loss.inner().into_scalar::<f32>();
        StepOutput { loss, grads, y1: y1.detach().inner(), z_std }
    }

    /// Applies an optimizer step to the online network, then the EMA update of the target.
    pub fn apply(&mut self, grads: &GradMap, opt: &mut dyn Optimizer, lr: f64, tau: f64) {
        opt.step(&mut self.online, grads, lr);
        crate::ema::update(&mut self.target, &self.online, tau);
    }
}
