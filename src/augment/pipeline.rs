//! Random parameters of the BYOL view pipelines (App. B, Table 6) sampled as torchvision's
//! `RandomResizedCrop`, `RandomHorizontalFlip`, `RandomApply(ColorJitter)`, `RandomGrayscale`,
//! `RandomApply(GaussianBlur)` and `RandomSolarize` do, and the deterministic [`Augmenter`]:
//! view `v` of sample `i` in epoch `e` depends only on `(seed, e, i, v)`.

use super::config::{AugmentConfig, ViewConfig};
use super::ops;
use super::resize::{eval_transform, resized_crop_u8, CropBox, Interpolation};
use super::ChwImage;
use crate::image::Image;
use anyhow::{ensure, Result};
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
    words
        .iter()
        .fold(splitmix64(tag), |h, &w| splitmix64(h ^ w))
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
pub fn sample_crop(
    rng: &mut impl Rng,
    height: usize,
    width: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
) -> CropBox {
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
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (
            width,
            (round_int(width as f64 / ratio[0]) as usize).clamp(1, height),
        )
    } else if in_ratio > ratio[1] {
        (
            (round_int(height as f64 * ratio[1]) as usize).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
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
            let mut order = [
                JitterOp::Brightness,
                JitterOp::Contrast,
                JitterOp::Saturation,
                JitterOp::Hue,
            ];
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
        let blur_sigma = coin(rng, self.blur_p)
            .then(|| uniform(rng, self.blur_sigma[0], self.blur_sigma[1]) as f32);
        let solarize = coin(rng, self.solarize_p);
        ViewParams {
            crop,
            flip,
            jitter,
            grayscale,
            blur_sigma,
            solarize,
        }
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

/// Writes `(x − mean[c]) / std[c]` of `img` into `out` (CHW).
fn normalize_into(img: &ChwImage, mean: &[f32], std: &[f32], out: &mut [f32]) {
    let n = img.plane();
    for (c, (src, dst)) in img
        .data
        .chunks_exact(n)
        .zip(out.chunks_exact_mut(n))
        .enumerate()
    {
        let (m, inv) = (mean[c], 1.0 / std[c]);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = (s - m) * inv;
        }
    }
}

/// The two BYOL view pipelines T, T′ plus normalization and the evaluation transform, with
/// every random choice derived from `(seed, epoch, index, view)`.
#[derive(Clone, Debug)]
pub struct Augmenter {
    config: AugmentConfig,
    seed: u64,
}

impl Augmenter {
    /// Validates `config` and builds the augmenter.
    pub fn new(config: AugmentConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, seed })
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Shape `[channels, size, size]` of one augmented view.
    pub fn view_shape(&self) -> [usize; 3] {
        [
            self.config.channels(),
            self.config.view1.size,
            self.config.view1.size,
        ]
    }

    /// Shape `[channels, crop, crop]` of one evaluation image.
    pub fn eval_shape(&self) -> [usize; 3] {
        [
            self.config.channels(),
            self.config.eval.crop,
            self.config.eval.crop,
        ]
    }

    fn view_config(&self, view: usize) -> &ViewConfig {
        if view == 0 {
            &self.config.view1
        } else {
            &self.config.view2
        }
    }

    /// The random parameters of view `view` (0 = T, 1 = T′) of sample `index` in `epoch`
    /// for an input of `height × width` pixels.
    pub fn view_params(
        &self,
        epoch: u64,
        index: u64,
        view: usize,
        height: usize,
        width: usize,
    ) -> ViewParams {
        let mut rng = view_rng(self.seed, epoch, index, view as u64);
        self.view_config(view).sample(&mut rng, height, width)
    }

    fn check_image(&self, image: &Image) -> Result<()> {
        ensure!(
            image.channels == self.config.channels(),
            "image has {} channels but the augmentation expects {} (mean/std entries)",
            image.channels,
            self.config.channels()
        );
        ensure!(
            image.width > 0
                && image.height > 0
                && image.data.len() == image.width * image.height * image.channels,
            "image {}x{}x{} has {} bytes",
            image.height,
            image.width,
            image.channels,
            image.data.len()
        );
        Ok(())
    }

    /// View `view` of sample `index` in `epoch`, normalized, written into `out` (CHW,
    /// `view_shape` values).
    pub fn augment_view_into(
        &self,
        image: &Image,
        epoch: u64,
        index: u64,
        view: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.check_image(image)?;
        let [c, h, w] = self.view_shape();
        ensure!(
            out.len() == c * h * w,
            "output buffer has {} values, expected {}",
            out.len(),
            c * h * w
        );
        let params = self.view_params(epoch, index, view, image.height, image.width);
        let x = self.view_config(view).apply(image, &params)?;
        normalize_into(&x, &self.config.mean, &self.config.std, out);
        Ok(())
    }

    /// Both views of sample `index` in `epoch` as two normalized CHW vectors.
    pub fn augment_pair(
        &self,
        image: &Image,
        epoch: u64,
        index: u64,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let n: usize = self.view_shape().iter().product();
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        self.augment_view_into(image, epoch, index, 0, &mut a)?;
        self.augment_view_into(image, epoch, index, 1, &mut b)?;
        Ok((a, b))
    }

    /// The evaluation transform (short-side resize, center crop, normalize) into `out`.
    pub fn eval_into(&self, image: &Image, out: &mut [f32]) -> Result<()> {
        self.check_image(image)?;
        let [c, h, w] = self.eval_shape();
        ensure!(
            out.len() == c * h * w,
            "output buffer has {} values, expected {}",
            out.len(),
            c * h * w
        );
        let e = &self.config.eval;
        let x = eval_transform(image, e.resize, e.crop, e.interpolation)?;
        normalize_into(&x, &self.config.mean, &self.config.std, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_config() -> AugmentConfig {
        let mut c = AugmentConfig::cifar();
        for v in [&mut c.view1, &mut c.view2] {
            *v = ViewConfig {
                size: 8,
                crop_scale: [1.0, 1.0],
                crop_ratio: [1.0, 1.0],
                flip_p: 0.0,
                jitter_p: 0.0,
                grayscale_p: 0.0,
                blur_p: 0.0,
                solarize_p: 0.0,
                ..v.clone()
            };
        }
        c
    }

    #[test]
    fn identity_flip_and_solarize_paths() {
        let data: Vec<u8> = (0..8 * 8 * 3).map(|k| (k * 5 % 256) as u8).collect();
        let img = Image::new(8, 8, 3, data.clone()).unwrap();
        let cfg = plain_config();
        let norm = |c: usize, v: f32| (v - cfg.mean[c]) / cfg.std[c];
        let px = |c: usize, y: usize, x: usize| data[(y * 8 + x) * 3 + c] as f32 / 255.0;
        let (a, _) = Augmenter::new(cfg.clone(), 3)
            .unwrap()
            .augment_pair(&img, 0, 0)
            .unwrap();
        let mut flipped = cfg.clone();
        flipped.view1.flip_p = 1.0;
        flipped.view1.solarize_p = 1.0;
        let (f, _) = Augmenter::new(flipped, 3)
            .unwrap()
            .augment_pair(&img, 0, 0)
            .unwrap();
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let i = (c * 8 + y) * 8 + x;
                    assert!((a[i] - norm(c, px(c, y, x))).abs() < 1e-5);
                    let v = px(c, y, 7 - x);
                    let s = if v >= 0.5 { 1.0 - v } else { v };
                    assert!((f[i] - norm(c, s)).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn wrong_channel_count_is_an_error() {
        let img = Image::new(8, 8, 1, vec![0; 64]).unwrap();
        let aug = Augmenter::new(plain_config(), 0).unwrap();
        let err = aug.augment_pair(&img, 0, 0).unwrap_err().to_string();
        assert!(err.contains("1 channels"), "{err}");
    }
}
