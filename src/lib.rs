//! byol — BYOL (Bootstrap Your Own Latent, Grill et al. 2020) in native Rust on burn.

pub mod byol;
pub mod ema;
pub mod fsutil;
pub mod grads;
pub mod heads;
pub mod image;
pub mod lars;
pub mod layers;
pub mod loss;
pub mod optim;
pub mod params;
pub mod resnet;
pub mod schedule;
