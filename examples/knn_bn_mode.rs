//! Diagnostic: kNN of a run's encoder with BatchNorm running statistics (eval mode) versus
//! batch statistics (train mode), on Fashion-MNIST. Usage: knn_bn_mode RUN_DIR
use burn::tensor::{Device, Tensor, TensorData};
use byol::config::PretrainConfig;
use byol::image::Dataset;
use byol::knn::{knn_evaluate, KnnConfig};
use byol::loader::{EvalLoader, LoaderConfig};
use std::sync::Arc;
fn feats(
    cfg: &PretrainConfig,
    ps: &byol::params::ParamSet,
    ds: Arc<dyn Dataset>,
    train: bool,
) -> (Vec<f32>, Vec<usize>) {
    let aug = byol::pretrain::augment_config(cfg).unwrap();
    let l = EvalLoader::new(
        ds,
        aug,
        LoaderConfig { batch_size: 256, drop_last: false, shuffle: false, seed: 0, prefetch: 2, threads: 0 },
    )
    .unwrap();
    let mut ps = ps.detached();
    let (mut v, mut y) = (Vec::new(), Vec::new());
    for b in l.iter_from(0).unwrap() {
        let b = b.unwrap();
        let x = Tensor::<4>::from_data(TensorData::new(b.images, b.shape), &Device::flex());
        let f = byol::resnet::forward(&cfg.model.encoder, &mut ps, "", x, train);
        v.extend(byol::params::to_vec(&f));
        y.extend(b.labels.into_iter().map(|l| l.unwrap()));
    }
    (v, y)
}
fn main() {
    let run = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let cfg = PretrainConfig::load(None, Some(&run.join("config.toml")), &[]).unwrap();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(cfg.run.seed);
    let init = byol::resnet::init(&cfg.model.encoder, &mut rng, &Device::flex()).unwrap();
    let mut trained = init.clone();
    trained.load_safetensors(&run.join("encoder.safetensors"), "").unwrap();
    let tr = byol::pretrain::open_dataset(&cfg, "train", 5000).unwrap();
    let te = byol::pretrain::open_dataset(&cfg, "test", 2000).unwrap();
    for (name, ps) in [("random init", &init), ("trained", &trained)] {
        for train in [false, true] {
            let (a, la) = feats(&cfg, ps, tr.clone(), train);
            let (b, lb) = feats(&cfg, ps, te.clone(), train);
            let d = cfg.model.encoder.out_dim();
            let r = knn_evaluate(&a, &la, &b, &lb, d, 10, &KnnConfig::default()).unwrap();
            println!(
                "{name:12} BN {}: kNN top-1 {:.2}%",
                if train { "batch stats " } else { "running stats" },
                r.top1 * 100.0
            );
        }
    }
}
