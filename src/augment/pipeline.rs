//! Random parameters of the BYOL view pipelines (App. B, Table 6) sampled as torchvision's
//! `RandomResizedCrop`, `RandomHorizontalFlip`, `RandomApply(ColorJitter)`, `RandomGrayscale`,
//! `RandomApply(GaussianBlur)` and `RandomSolarize` do, and their application to an image.

use super::config::ViewConfig;
use super::ops;
use super::resize::{resized_crop_u8, CropBox, Interpolation};
use super::ChwImage;
use crate::image::Image;
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One of the four colour-jitter ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JitterOp {
    Brightness,
    Contrast,
    Saturation,
    Hue,
}

/// Sampled colour-jitter parameters: op order (a random permutation) and factors
/// (`None` where the strength is 0).
#[derive(Clone, Debug, PartialEq)]
pub struct JitterParams {
    pub order: [JitterOp; 4],
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub saturation: Option<f32>,
    pub hue: Option<f32>,
}

/// Every random choice of one view.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewParams {
    pub crop: CropBox,
    pub flip: bool,
    pub jitter: Option<JitterParams>,
    pub grayscale: bool,
    pub blur_sigma: Option<f32>,
    pub solarize: bool,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes a tag and several words into one 64-bit seed (chained SplitMix64).
pub(crate) fn mix_seed(tag: u64, words: &[u64]) -> u64 {
    words.iter().fold(splitmix64(tag), |h, &w| splitmix64(h ^ w))
}

/// The RNG of view `view` of sample `index` in `epoch`: a function of these four numbers only.
pub fn view_rng(seed: u64, epoch: u64, index: u64, view: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(0xA06_0001, &[seed, epoch, index, view]))
}

/// Python's `int(round(x))` (round half to even).
fn round_int(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// `RandomResizedCrop.get_params`: up to 10 tries of area ~ U[scale]·H·W and
/// ratio ~ exp(U[ln r0, ln r1]); then the central crop clamped to the ratio range.
pub fn sample_crop(rng: &mut impl Rng, height: usize, width: usize, scale: [f64; 2], ratio: [f64; 2]) -> CropBox {
    let area = (height * width) as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale[0], scale[1]);
        let aspect = uniform(rng, lr0, lr1).exp();
        let w = round_int((target * aspect).sqrt());
        let h = round_int((target / aspect).sqrt());
        if 0 < w && w <= width as i64 && 0 < h && h <= height as i64 {
            let (w, h) = (w as usize, h as usize);
            let top = rng.gen_range(0..=height - h);
            let left = rng.gen_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (width, (round_int(width as f64 / ratio[0]) as usize).clamp(1, height))
    } else if in_ratio > ratio[1] {
        ((round_int(height as f64 * ratio[1]) as usize).clamp(1, width), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    if lo < hi {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

fn coin(rng: &mut impl Rng, p: f64) -> bool {
    rng.gen::<f64>() < p
}

/// ColorJitter factor range `[max(0, 1 − x), 1 + x]`; `None` for strength 0.
fn factor(rng: &mut impl Rng, x: f64) -> Option<f32> {
    (x > 0.0).then(|| uniform(rng, (1.0 - x).max(0.0), 1.0 + x) as f32)
}

impl ViewConfig {
    /// Samples every random choice of this view for an input of `height × width` pixels.
    pub fn sample(&self, rng: &mut impl Rng, height: usize, width: usize) -> ViewParams {
        let crop = sample_crop(rng, height, width, self.crop_scale, self.crop_ratio);
        let flip = coin(rng, self.flip_p);
        let jitter = coin(rng, self.jitter_p).then(|| {
            let mut order = [JitterOp::Brightness, JitterOp::Contrast, JitterOp::Saturation, JitterOp::Hue];
            order.shuffle(rng);
            JitterParams {
                order,
                brightness: factor(rng, self.brightness),
                contrast: factor(rng, self.contrast),
                saturation: factor(rng, self.saturation),
                hue: (self.hue > 0.0).then(|| uniform(rng, -self.hue, self.hue) as f32),
            }
        });
        let grayscale = coin(rng, self.grayscale_p);
        let blur_sigma = coin(rng, self.blur_p).then(|| uniform(rng, self.blur_sigma[0], self.blur_sigma[1]) as f32);
        let solarize = coin(rng, self.solarize_p);
        ViewParams { crop, flip, jitter, grayscale, blur_sigma, solarize }
    }

    /// Applies sampled parameters to an 8-bit image: a float CHW image in [0, 1], not yet
    /// normalized. Bicubic overshoot is clamped to [0, 1] right after the resize, as in the
    /// reference recipes whose resize runs on 8-bit PIL images.
    pub fn apply(&self, image: &Image, p: &ViewParams) -> Result<ChwImage> {
        let mut x = resized_crop_u8(image, p.crop, self.size, self.size, self.interpolation)?;
        if self.interpolation == Interpolation::Bicubic {
            x.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        }
        if p.flip {
            ops::hflip(&mut x);
        }
        if let Some(j) = &p.jitter {
            for op in j.order {
                match (op, j.brightness, j.contrast, j.saturation, j.hue) {
                    (JitterOp::Brightness, Some(f), ..) => ops::adjust_brightness(&mut x, f),
                    (JitterOp::Contrast, _, Some(f), ..) => ops::adjust_contrast(&mut x, f),
                    (JitterOp::Saturation, _, _, Some(f), _) => ops::adjust_saturation(&mut x, f),
                    (JitterOp::Hue, _, _, _, Some(f)) => ops::adjust_hue(&mut x, f),
                    _ => {}
                }
            }
        }
        if p.grayscale {
            ops::to_grayscale(&mut x);
        }
        if let Some(sigma) = p.blur_sigma {
            ops::gaussian_blur(&mut x, self.blur_kernel_size(), sigma)?;
        }
        if p.solarize {
            ops::solarize(&mut x, self.solarize_threshold as f32);
        }
        Ok(x)
    }
}
