//! The deterministic BYOL augmenter (App. B): both view pipelines T, T′, normalization and
//! the evaluation transform; view `v` of sample `i` in epoch `e` depends only on
//! `(seed, e, i, v)` through [`view_rng`].

use super::config::{AugmentConfig, ViewConfig};
use super::pipeline::{view_rng, ViewParams};
use super::resize::eval_transform;
use super::ChwImage;
use crate::image::Image;
use anyhow::{ensure, Result};

/// Writes `(x − mean[c]) / std[c]` of `img` into `out` (CHW).
fn normalize_into(img: &ChwImage, mean: &[f32], std: &[f32], out: &mut [f32]) {
    let n = img.plane();
    for (c, (src, dst)) in img.data.chunks_exact(n).zip(out.chunks_exact_mut(n)).enumerate() {
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
        [self.config.channels(), self.config.view1.size, self.config.view1.size]
    }

    /// Shape `[channels, crop, crop]` of one evaluation image.
    pub fn eval_shape(&self) -> [usize; 3] {
        [self.config.channels(), self.config.eval.crop, self.config.eval.crop]
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
    pub fn view_params(&self, epoch: u64, index: u64, view: usize, height: usize, width: usize) -> ViewParams {
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
            image.width > 0 && image.height > 0 && image.data.len() == image.width * image.height * image.channels,
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
    pub fn augment_view_into(&self, image: &Image, epoch: u64, index: u64, view: usize, out: &mut [f32]) -> Result<()> {
        self.check_image(image)?;
        let [c, h, w] = self.view_shape();
        ensure!(out.len() == c * h * w, "output buffer has {} values, expected {}", out.len(), c * h * w);
        let params = self.view_params(epoch, index, view, image.height, image.width);
        let x = self.view_config(view).apply(image, &params)?;
        normalize_into(&x, &self.config.mean, &self.config.std, out);
        Ok(())
    }

    /// Both views of sample `index` in `epoch` as two normalized CHW vectors.
    pub fn augment_pair(&self, image: &Image, epoch: u64, index: u64) -> Result<(Vec<f32>, Vec<f32>)> {
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
        ensure!(out.len() == c * h * w, "output buffer has {} values, expected {}", out.len(), c * h * w);
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
        let (a, _) = Augmenter::new(cfg.clone(), 3).unwrap().augment_pair(&img, 0, 0).unwrap();
        let mut flipped = cfg.clone();
        flipped.view1.flip_p = 1.0;
        flipped.view1.solarize_p = 1.0;
        let (f, _) = Augmenter::new(flipped, 3).unwrap().augment_pair(&img, 0, 0).unwrap();
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
