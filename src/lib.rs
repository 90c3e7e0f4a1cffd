//! byol — BYOL (Bootstrap Your Own Latent, Grill et al. 2020) in native Rust on burn.

pub mod augment;
pub mod backend;
pub mod byol;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod ema;
pub mod extract;
pub mod fsutil;
pub mod grads;
pub mod heads;
pub mod image;
pub mod lars;
pub mod layers;
pub mod loader;
pub mod loss;
pub mod metrics;
pub mod monitor;
pub mod optim;
pub mod params;
pub mod pretrain;
pub mod probe;
pub mod resnet;
pub mod schedule;
pub mod subset;
