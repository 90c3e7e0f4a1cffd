//! Configuration of the two BYOL view pipelines T and T′ (App. B, Table 6) and presets.
//! Every probability and strength is a field; unknown fields are rejected when deserializing.

use super::Interpolation;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// One view pipeline (T or T′), applied in this order: random resized crop, horizontal flip,
/// colour jitter (random order of its four ops), grayscale, Gaussian blur, solarize.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// Output side length in pixels (square output).
    pub size: usize,
    /// Range of the crop area as a fraction of the image area (uniform).
    pub crop_scale: [f64; 2],
    /// Range of the crop aspect ratio w/h (log-uniform).
    pub crop_ratio: [f64; 2],
    /// Resize filter of the crop.
    pub interpolation: Interpolation,
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Probability of applying colour jitter.
    pub jitter_p: f64,
    /// Brightness strength x: factor ~ U[max(0, 1 − x), 1 + x]; 0 disables.
    pub brightness: f64,
    /// Contrast strength (as brightness).
    pub contrast: f64,
    /// Saturation strength (as brightness); must be 0 for 1-channel data.
    pub saturation: f64,
    /// Hue strength h ≤ 0.5: shift ~ U[−h, h]; must be 0 for 1-channel data.
    pub hue: f64,
    /// Probability of converting to grayscale (must be 0 for 1-channel data).
    pub grayscale_p: f64,
    /// Probability of a Gaussian blur.
    pub blur_p: f64,
    /// Range of the blur σ (uniform).
    pub blur_sigma: [f64; 2],
    /// Odd blur kernel size; `None`: ≈ 10% of `size`, made odd (23 at 224 px).
    #[serde(default)]
    pub blur_kernel: Option<usize>,
    /// Probability of solarization.
    pub solarize_p: f64,
    /// Solarize threshold: x ≥ threshold → 1 − x.
    pub solarize_threshold: f64,
}

/// The evaluation transform: resize the short side to `resize`, center crop `crop`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub resize: usize,
    pub crop: usize,
    pub interpolation: Interpolation,
}

/// The full augmentation configuration: T (`view1`), T′ (`view2`), the per-channel
/// normalization applied last (one entry per channel: 3 for RGB, 1 for grayscale data)
/// and the evaluation transform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub view1: ViewConfig,
    pub view2: ViewConfig,
    pub eval: EvalConfig,
}

/// Names accepted by [`preset`].
pub const PRESET_NAMES: [&str; 3] = ["imagenet", "cifar", "grayscale"];

/// Looks up a preset by name: `imagenet` (Table 6, 224 px, bicubic), `cifar` (solo-learn,
/// 32 px, no blur) or `grayscale` (1-channel, 28 px, no colour ops).
pub fn preset(name: &str) -> Result<AugmentConfig> {
    match name {
        "imagenet" => Ok(AugmentConfig::imagenet()),
        "cifar" => Ok(AugmentConfig::cifar()),
        "grayscale" => Ok(AugmentConfig::grayscale()),
        _ => bail!("unknown augmentation preset {name:?}; valid presets: {}", PRESET_NAMES.join(", ")),
    }
}

impl ViewConfig {
    /// T of Table 6 at `size` px: blur 1.0, solarize 0.
    pub fn byol_t(size: usize) -> Self {
        Self {
            size,
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            interpolation: Interpolation::Bicubic,
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: 1.0,
            blur_sigma: [0.1, 2.0],
            blur_kernel: None,
            solarize_p: 0.0,
            solarize_threshold: 0.5,
        }
    }

    /// T′ of Table 6 at `size` px: blur 0.1, solarize 0.2.
    pub fn byol_t_prime(size: usize) -> Self {
        Self { blur_p: 0.1, solarize_p: 0.2, ..Self::byol_t(size) }
    }

    /// The blur kernel size used: the configured one, or `size / 10` made odd (at least 3).
    pub fn blur_kernel_size(&self) -> usize {
        self.blur_kernel.unwrap_or_else(|| ((self.size / 10) | 1).max(3))
    }

    /// Checks every field; `channels` is the number of image channels (1 or 3).
    pub fn validate(&self, channels: usize) -> Result<()> {
        ensure!(self.size > 0, "size must be > 0");
        let [s0, s1] = self.crop_scale;
        ensure!(0.0 < s0 && s0 <= s1 && s1 <= 1.0, "crop_scale {:?} must satisfy 0 < lo <= hi <= 1", self.crop_scale);
        let [r0, r1] = self.crop_ratio;
        ensure!(0.0 < r0 && r0 <= r1 && r1.is_finite(), "crop_ratio {:?} must satisfy 0 < lo <= hi", self.crop_ratio);
        for (name, p) in [
            ("flip_p", self.flip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ] {
            ensure!((0.0..=1.0).contains(&p), "{name} = {p} is not a probability in [0, 1]");
        }
        for (name, x) in [("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation)]
        {
            ensure!(x >= 0.0 && x.is_finite(), "{name} = {x} must be >= 0");
        }
        ensure!((0.0..=0.5).contains(&self.hue), "hue = {} must be in [0, 0.5]", self.hue);
        let [b0, b1] = self.blur_sigma;
        ensure!(0.0 < b0 && b0 <= b1 && b1.is_finite(), "blur_sigma {:?} must satisfy 0 < lo <= hi", self.blur_sigma);
        let k = self.blur_kernel_size();
        ensure!(k % 2 == 1, "blur_kernel {k} must be odd");
        ensure!(self.solarize_threshold.is_finite(), "solarize_threshold must be finite");
        match channels {
            3 => {}
            1 => ensure!(
                self.saturation == 0.0 && self.hue == 0.0 && self.grayscale_p == 0.0,
                "saturation, hue and grayscale_p must be 0 for 1-channel images (use the grayscale preset)"
            ),
            c => bail!("images must have 1 or 3 channels, not {c}"),
        }
        Ok(())
    }
}

impl AugmentConfig {
    /// BYOL Table 6: 224 px, bicubic, blur 1.0/0.1, solarize 0/0.2, ImageNet mean/std;
    /// evaluation: short side 256 (bicubic), center crop 224.
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            view1: ViewConfig::byol_t(224),
            view2: ViewConfig::byol_t_prime(224),
            eval: EvalConfig { resize: 256, crop: 224, interpolation: Interpolation::Bicubic },
        }
    }

    /// solo-learn's CIFAR BYOL recipe: 32 px, crop scale (0.08, 1), jitter 0.4/0.4/0.2/0.1
    /// with p 0.8, grayscale 0.2, no blur, solarize 0/0.2, CIFAR-10 mean/std.
    pub fn cifar() -> Self {
        let t = ViewConfig { blur_p: 0.0, ..ViewConfig::byol_t(32) };
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
            view1: t.clone(),
            view2: ViewConfig { solarize_p: 0.2, ..t },
            eval: EvalConfig { resize: 32, crop: 32, interpolation: Interpolation::Bicubic },
        }
    }

    /// 1-channel data (e.g. Fashion-MNIST, 28 px): crop, flip, brightness/contrast jitter,
    /// blur 1.0/0.1, solarize 0/0.2; no saturation, hue or grayscale. Normalization with
    /// Fashion-MNIST's mean/std (0.2860, 0.3530).
    pub fn grayscale() -> Self {
        let t = ViewConfig { saturation: 0.0, hue: 0.0, grayscale_p: 0.0, ..ViewConfig::byol_t(28) };
        Self {
            mean: vec![0.2860],
            std: vec![0.3530],
            view1: t.clone(),
            view2: ViewConfig { blur_p: 0.1, solarize_p: 0.2, ..t },
            eval: EvalConfig { resize: 28, crop: 28, interpolation: Interpolation::Bicubic },
        }
    }

    /// Number of image channels this configuration expects (length of `mean`).
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Checks every field of both views, the normalization and the evaluation transform.
    pub fn validate(&self) -> Result<()> {
        let c = self.channels();
        ensure!(c == 1 || c == 3, "mean has {c} entries; expected 1 (grayscale) or 3 (RGB)");
        ensure!(self.std.len() == c, "std has {} entries but mean has {c}", self.std.len());
        ensure!(self.std.iter().all(|&s| s > 0.0 && s.is_finite()), "std {:?} must be > 0", self.std);
        ensure!(self.mean.iter().all(|m| m.is_finite()), "mean {:?} must be finite", self.mean);
        self.view1.validate(c).context("augmentation view1 (T)")?;
        self.view2.validate(c).context("augmentation view2 (T')")?;
        ensure!(
            self.view1.size == self.view2.size,
            "view1.size {} and view2.size {} must be equal",
            self.view1.size,
            self.view2.size
        );
        let e = &self.eval;
        ensure!(0 < e.crop && e.crop <= e.resize, "eval: need 0 < crop ({}) <= resize ({})", e.crop, e.resize);
        Ok(())
    }

    /// Parses and validates a TOML configuration (the layout of this struct).
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).context("parsing the augmentation configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_lookup_lists_names() {
        for name in PRESET_NAMES {
            preset(name).unwrap().validate().unwrap();
        }
        let err = preset("imagenett").unwrap_err().to_string();
        assert!(err.contains("imagenet, cifar, grayscale"), "{err}");
        assert_eq!(AugmentConfig::imagenet().view1.blur_kernel_size(), 23);
        assert_eq!(AugmentConfig::cifar().view1.blur_kernel_size(), 3);
    }

    #[test]
    fn toml_round_trip_and_unknown_fields_rejected() {
        let cfg = AugmentConfig::cifar();
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(AugmentConfig::from_toml(&text).unwrap(), cfg);
        let bad = text.replace("flip_p", "flip_prob");
        assert!(AugmentConfig::from_toml(&bad).is_err());
        let bad = text.replace("flip_p = 0.5", "flip_p = 1.5");
        let err = format!("{:#}", AugmentConfig::from_toml(&bad).unwrap_err());
        assert!(err.contains("flip_p") && err.contains("view1"), "{err}");
    }

    #[test]
    fn colour_ops_rejected_for_grayscale_data() {
        let mut cfg = AugmentConfig::grayscale();
        cfg.view2.hue = 0.1;
        assert!(cfg.validate().is_err());
    }
}
