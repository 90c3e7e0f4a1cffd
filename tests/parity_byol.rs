//! Parity of full BYOL training steps with the PyTorch reference, over every `byol_step`
//! fixture: loss, gradients, online parameters after LARS and target after the EMA update.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use byol::byol::{Byol, ByolConfig};
use byol::heads::MlpConfig;
use byol::lars::Lars;
use byol::resnet::{ResNetConfig, Stem};
use common::*;

fn sizes(meta: &serde_json::Value, key: &str) -> Vec<usize> {
    meta[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect()
}

fn config(meta: &serde_json::Value, t: &Tensors) -> ByolConfig {
    let depth: usize = meta["encoder"].as_str().unwrap().trim_start_matches("resnet").parse().unwrap();
    let stem = if meta["stem"] == "cifar" { Stem::Cifar } else { Stem::Imagenet };
    let width = meta["width"].as_u64().unwrap() as usize;
    let (proj, pred) = (sizes(meta, "projector"), sizes(meta, "predictor"));
    let in_channels = t["step0.view1"].0[1];
    let encoder = ResNetConfig { depth, width, stem, in_channels, zero_init_residual: false };
    assert_eq!(proj[0], encoder.out_dim());
    let last_bias = |m: &str| t.contains_key(&format!("online.{m}.net.3.bias"));
    ByolConfig {
        encoder,
        projector: MlpConfig { hidden: proj[1], out: proj[2], last_bias: last_bias("projector") },
        predictor: MlpConfig { hidden: pred[1], out: pred[2], last_bias: last_bias("predictor") },
    }
}

fn view(t: &Tensors, name: &str, device: &Device) -> Tensor<4> {
    let (shape, v) = &t[name];
    Tensor::<4>::from_data(TensorData::new(v.clone(), shape.clone()), device)
}

#[test]
fn byol_steps_match_pytorch_on_every_fixture() {
    for (name, meta, t) in fixtures("byol_step") {
        let device = Device::flex().autodiff();
        let mut model = Byol::new(config(&meta, &t), 0, &device).unwrap();
        model.online.load_host(&with_prefix(&t, "online."), &name, |_| false).unwrap();
        model.reset_target();
        let l = &meta["lars"];
        let f = |k: &str| l[k].as_f64().unwrap();
        let mut opt = Lars::new(f("momentum") as f32, f("weight_decay") as f32, f("eta") as f32);
        let tau = meta["tau"].as_f64().unwrap();
        let steps = meta["steps"].as_u64().unwrap() as usize;
        assert!(steps > 0);
        for s in 0..steps {
            let host = device.clone().inner();
            let out = model.forward_backward(
                view(&t, &format!("step{s}.view1"), &host),
                view(&t, &format!("step{s}.view2"), &host),
            );
            let e = rel_err(&[out.loss], &t[&format!("step{s}.loss")].1);
            println!("{name} step {s}: loss {} rel err {e:.2e}", out.loss);
            assert!(e <= FWD_TOL, "{name} step {s}: loss rel err {e}");
            let grads = with_prefix(&t, &format!("step{s}.grad."));
            assert!(!grads.is_empty());
            for (k, (_, v)) in &grads {
                let g = out.grads.get(k).unwrap_or_else(|| panic!("no gradient for {k}"));
                let e = rel_err(&byol::params::to_vec(g), v);
                assert!(e <= GRAD_TOL, "{name} step {s}: grad {k} rel err {e}");
            }
            model.apply(&out.grads, &mut opt, f("lr"), tau);
            for (set, ps) in [("online_after", &model.online), ("target_after", &model.target)] {
                let want = with_prefix(&t, &format!("step{s}.{set}."));
                assert_eq!(want.len(), ps.len(), "{name} step {s}: {set} tensor count");
                let mut worst = 0f32;
                for (k, (_, v)) in &want {
                    let e = rel_err(&ps.values(k), v);
                    worst = worst.max(e);
                    assert!(e <= GRAD_TOL, "{name} step {s}: {set}.{k} rel err {e}");
                }
                println!("{name} step {s}: {set} worst rel err {worst:.2e}");
            }
        }
    }
}
