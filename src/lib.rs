//! byol — BYOL (Bootstrap Your Own Latent, Grill et al. 2020) in native Rust on burn.

pub mod dense;
pub mod features;
pub mod image;
pub mod knn;
pub mod label_subset;
pub mod linear_probe;
pub mod logreg;
pub mod npy;
pub mod plot_canvas;
pub mod plots;
pub mod report;
pub mod scores;
pub mod softmax;
