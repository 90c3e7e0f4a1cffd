//! byol — BYOL (Bootstrap Your Own Latent, Grill et al. 2020) in native Rust on burn.

pub mod image;
pub mod augment;
pub mod loader;
