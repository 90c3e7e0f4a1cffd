//! The BYOL augmentation pipeline (Grill et al. 2020, App. B, Table 6).
//!
//! - [`ops`]: pure image operations with `torchvision.transforms.v2.functional` semantics on
//!   float CHW images in [0, 1];
//! - [`resize`]: crop + resize (bilinear / bicubic, no antialias) and the evaluation transform;
//! - [`config`]: the serde configuration of the two view pipelines T and T′ and the presets;
//! - [`pipeline`]: random parameter sampling and application of one view;
//! - [`augmenter`]: the deterministic per-sample [`Augmenter`] (both views, normalization).

pub mod augmenter;
pub mod config;
pub mod ops;
pub mod pipeline;
pub mod resize;

pub use augmenter::Augmenter;
pub use config::{preset, AugmentConfig, EvalConfig, ViewConfig, PRESET_NAMES};
pub use pipeline::{view_rng, JitterOp, JitterParams, ViewParams};
pub use resize::{CropBox, Interpolation};

use crate::image::Image;

/// A float image in CHW layout (`channels × height × width`, row-major), values nominally in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct ChwImage {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl ChwImage {
    /// Builds an image, checking that `data` holds `channels * height * width` values.
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            data.len() == channels * height * width,
            "float image has {} values, expected {channels}x{height}x{width}",
            data.len()
        );
        Ok(Self { channels, height, width, data })
    }

    /// Converts an 8-bit HWC image to float CHW in [0, 1] (`x / 255`, like `to_dtype(float32, scale=True)`).
    pub fn from_image(image: &Image) -> Self {
        let full = CropBox { top: 0, left: 0, height: image.height, width: image.width };
        Self::from_image_region(image, full)
    }

    /// Converts the region `crop` of an 8-bit HWC image to float CHW in [0, 1].
    /// The caller guarantees that `crop` lies inside the image.
    pub(crate) fn from_image_region(image: &Image, crop: CropBox) -> Self {
        let (c, h, w) = (image.channels, crop.height, crop.width);
        let mut data = vec![0.0f32; c * h * w];
        let plane = h * w;
        for y in 0..h {
            let row = &image.data[((crop.top + y) * image.width + crop.left) * c..][..w * c];
            for (x, px) in row.chunks_exact(c).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    data[ch * plane + y * w + x] = v as f32 / 255.0;
                }
            }
        }
        Self { channels: c, height: h, width: w, data }
    }

    /// Number of values in one channel plane.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }
}
