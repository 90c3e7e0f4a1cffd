//! byol — BYOL (Bootstrap Your Own Latent, Grill et al. 2020) in native Rust on burn.

pub mod datasets;
pub mod download;
pub mod image;
