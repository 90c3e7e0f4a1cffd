//! Crop + resize and the evaluation transform (BYOL App. B: random resized crop with bicubic
//! resize; test time: resize the short side, then center crop), with the semantics of
//! `torch.nn.functional.interpolate(..., align_corners=False, antialias=False)` on CPU:
//! source coordinate `(dst + 0.5)·in/out − 0.5`; bilinear clamps it at 0 and uses the next
//! pixel only inside the image; bicubic (a = −0.75) uses four taps with indices clamped
//! to the (cropped) input.

use super::ChwImage;
use crate::image::Image;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Resize filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

/// A crop box in pixels (torchvision's `top, left, height, width`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl CropBox {
    fn check(&self, h: usize, w: usize) -> Result<()> {
        ensure!(
            self.height > 0 && self.width > 0 && self.top + self.height <= h && self.left + self.width <= w,
            "crop box {self:?} is empty or outside the {h}x{w} image"
        );
        Ok(())
    }
}

/// Precomputed taps of a 1-D resize: for output `i`, input indices `idx[i*k..(i+1)*k]`
/// (already clamped into `0..in_size`) and their weights; the same taps folded into a
/// contiguous window `start[i]..start[i] + win` with weights `fw[i*win..(i+1)*win]` (clamped
/// border taps share a weight), which lets the horizontal pass load contiguous values.
pub(crate) struct Taps {
    k: usize,
    idx: Vec<usize>,
    w: Vec<f32>,
    win: usize,
    start: Vec<usize>,
    fw: Vec<f32>,
}

const CUBIC_A: f32 = -0.75;

#[inline]
fn cubic1(x: f32) -> f32 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

#[inline]
fn cubic2(x: f32) -> f32 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

impl Taps {
    pub(crate) fn new(in_size: usize, out_size: usize, interp: Interpolation) -> Self {
        let scale = in_size as f32 / out_size as f32;
        let last = in_size as isize - 1;
        let k = match interp {
            Interpolation::Bilinear => 2,
            Interpolation::Bicubic => 4,
        };
        let mut idx = Vec::with_capacity(out_size * k);
        let mut w = Vec::with_capacity(out_size * k);
        for o in 0..out_size {
            let src = scale * (o as f32 + 0.5) - 0.5;
            match interp {
                Interpolation::Bilinear => {
                    let src = src.max(0.0);
                    let i0 = (src.floor() as isize).min(last);
                    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
                    let i1 = if i0 < last { i0 + 1 } else { i0 };
                    idx.extend([i0 as usize, i1 as usize]);
                    w.extend([1.0 - l1, l1]);
                }
                Interpolation::Bicubic => {
                    let i0 = (src.floor() as isize).min(last);
                    let t = (src - i0 as f32).clamp(0.0, 1.0);
                    for j in 0..4 {
                        idx.push((i0 - 1 + j).clamp(0, last) as usize);
                    }
                    w.extend([cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)]);
                }
            }
        }
        let win = k.min(in_size);
        let mut start = Vec::with_capacity(out_size);
        let mut fw = vec![0.0f32; out_size * win];
        for o in 0..out_size {
            let ii = &idx[o * k..(o + 1) * k];
            let s = ii.iter().copied().min().unwrap_or(0).min(in_size - win);
            for (t, &i) in ii.iter().enumerate() {
                fw[o * win + i - s] += w[o * k + t];
            }
            start.push(s);
        }
        Self { k, idx, w, win, start, fw }
    }
}

/// One horizontal resize pass over contiguous windows of `K` (= `taps.win`) input values.
#[inline]
fn gather<const K: usize>(row: &[f32], taps: &Taps, dst: &mut [f32]) {
    let it = taps.start.iter().zip(taps.fw.chunks_exact(K));
    for (d, (&s, ww)) in dst.iter_mut().zip(it) {
        let r = &row[s..s + K];
        let mut acc = 0.0f32;
        for t in 0..K {
            acc += ww[t] * r[t];
        }
        *d = acc;
    }
}

/// Resizes the `crop` region of a plane source into `out` (`channels × out_h × out_w`).
/// `get_row(c, y)` returns row `y` (crop coordinates) of channel `c`, `crop.width` values long.
fn resample<'a>(
    channels: usize,
    (crop_h, crop_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    interp: Interpolation,
    get_row: impl Fn(usize, usize) -> &'a [f32],
    out: &mut [f32],
) {
    let tx = Taps::new(crop_w, out_w, interp);
    let ty = Taps::new(crop_h, out_h, interp);
    let k = tx.k;
    // Horizontal pass into tmp (crop_h × out_w) per channel, then vertical pass.
    let mut tmp = vec![0.0f32; crop_h * out_w];
    for c in 0..channels {
        for y in 0..crop_h {
            let row = get_row(c, y);
            let dst = &mut tmp[y * out_w..(y + 1) * out_w];
            match tx.win {
                4 => gather::<4>(row, &tx, dst),
                3 => gather::<3>(row, &tx, dst),
                2 => gather::<2>(row, &tx, dst),
                _ => gather::<1>(row, &tx, dst),
            }
        }
        let plane = &mut out[c * out_h * out_w..(c + 1) * out_h * out_w];
        for y in 0..out_h {
            let dst = &mut plane[y * out_w..(y + 1) * out_w];
            dst.fill(0.0);
            for t in 0..k {
                let sy = ty.idx[y * k + t];
                let wy = ty.w[y * k + t];
                for (d, &s) in dst.iter_mut().zip(&tmp[sy * out_w..(sy + 1) * out_w]) {
                    *d += wy * s;
                }
            }
        }
    }
}

/// `resized_crop`: crop `crop` out of `img`, then resize it to `out_h × out_w`. Bicubic output
/// is not clamped (as torchvision on float tensors).
pub fn resized_crop(
    img: &ChwImage,
    crop: CropBox,
    out_h: usize,
    out_w: usize,
    interp: Interpolation,
) -> Result<ChwImage> {
    crop.check(img.height, img.width)?;
    ensure!(out_h > 0 && out_w > 0, "resize to an empty size {out_h}x{out_w}");
    let mut out = vec![0.0f32; img.channels * out_h * out_w];
    let (h, w) = (img.height, img.width);
    resample(
        img.channels,
        (crop.height, crop.width),
        (out_h, out_w),
        interp,
        |c, y| {
            let start = c * h * w + (crop.top + y) * w + crop.left;
            &img.data[start..start + crop.width]
        },
        &mut out,
    );
    ChwImage::new(img.channels, out_h, out_w, out)
}

/// `resized_crop` straight from an 8-bit HWC image: converts only the crop region to float.
pub fn resized_crop_u8(
    img: &Image,
    crop: CropBox,
    out_h: usize,
    out_w: usize,
    interp: Interpolation,
) -> Result<ChwImage> {
    crop.check(img.height, img.width)?;
    let region = ChwImage::from_image_region(img, crop);
    let full = CropBox { top: 0, left: 0, height: crop.height, width: crop.width };
    if crop.height == out_h && crop.width == out_w {
        return Ok(region);
    }
    resized_crop(&region, full, out_h, out_w, interp)
}

/// Output size of `resize(size=[short])` (torchvision `_compute_resized_output_size`):
/// the short side becomes `short`, the long side `int(short · long / short_in)`.
pub fn short_side_size(height: usize, width: usize, short: usize) -> (usize, usize) {
    if width <= height {
        (((short as f64) * height as f64 / width as f64) as usize, short)
    } else {
        (short, ((short as f64) * width as f64 / height as f64) as usize)
    }
}

/// Center crop box of `center_crop` (offsets `int(round((in − out) / 2))`, Python's
/// round-half-to-even). Errors if the crop is larger than the image.
pub fn center_crop_box(height: usize, width: usize, crop_h: usize, crop_w: usize) -> Result<CropBox> {
    ensure!(
        crop_h <= height && crop_w <= width,
        "center crop {crop_h}x{crop_w} is larger than the {height}x{width} image"
    );
    let off = |a: usize, b: usize| ((a - b) as f64 / 2.0).round_ties_even() as usize;
    Ok(CropBox { top: off(height, crop_h), left: off(width, crop_w), height: crop_h, width: crop_w })
}

/// The evaluation transform: resize the short side to `resize` (no antialias), then center
/// crop `crop × crop`. Returns a float CHW image in [0, 1] (bicubic overshoot clamped, as the
/// 8-bit PIL path of the reference recipes does).
pub fn eval_transform(img: &Image, resize: usize, crop: usize, interp: Interpolation) -> Result<ChwImage> {
    ensure!(img.width > 0 && img.height > 0, "cannot transform an empty {}x{} image", img.height, img.width);
    let (rh, rw) = short_side_size(img.height, img.width, resize);
    let full = CropBox { top: 0, left: 0, height: img.height, width: img.width };
    let mut resized = resized_crop_u8(img, full, rh, rw, interp)?;
    if interp == Interpolation::Bicubic {
        resized.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    }
    let cb = center_crop_box(rh, rw, crop, crop)?;
    if cb.height == rh && cb.width == rw {
        return Ok(resized);
    }
    let mut out = Vec::with_capacity(img.channels * crop * crop);
    for c in 0..img.channels {
        for y in 0..crop {
            let start = c * rh * rw + (cb.top + y) * rw + cb.left;
            out.extend_from_slice(&resized.data[start..start + crop]);
        }
    }
    ChwImage::new(img.channels, crop, crop, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_side_and_center_crop_follow_torchvision() {
        assert_eq!(short_side_size(375, 500, 256), (256, 341));
        assert_eq!(short_side_size(500, 375, 256), (341, 256));
        // (293 − 224) / 2 = 34.5 → 34 (round half to even); (295 − 224)/2 = 35.5 → 36.
        assert_eq!(
            center_crop_box(293, 295, 224, 224).unwrap(),
            CropBox { top: 34, left: 36, height: 224, width: 224 }
        );
        assert!(center_crop_box(100, 300, 224, 224).is_err());
    }

    #[test]
    fn same_size_resize_is_identity() {
        let data: Vec<f32> = (0..2 * 5 * 7).map(|i| (i as f32 * 0.37).sin().abs()).collect();
        let img = ChwImage::new(2, 5, 7, data).unwrap();
        let full = CropBox { top: 0, left: 0, height: 5, width: 7 };
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let out = resized_crop(&img, full, 5, 7, interp).unwrap();
            assert!(out.data.iter().zip(&img.data).all(|(a, b)| (a - b).abs() < 1e-6));
        }
    }

    #[test]
    fn eval_transform_without_resize_is_a_center_slice() {
        let (h, w) = (20, 24);
        let data: Vec<u8> = (0..h * w * 3).map(|k| (k * 7 % 251) as u8).collect();
        let img = Image::new(w, h, 3, data.clone()).unwrap();
        let out = eval_transform(&img, 20, 16, Interpolation::Bicubic).unwrap();
        assert_eq!((out.height, out.width), (16, 16));
        for c in 0..3 {
            for y in 0..16 {
                for x in 0..16 {
                    let want = data[((y + 2) * w + x + 4) * 3 + c] as f32 / 255.0;
                    assert_eq!(out.data[(c * 16 + y) * 16 + x], want);
                }
            }
        }
    }

    #[test]
    fn out_of_bounds_crop_is_an_error() {
        let img = ChwImage::new(1, 4, 4, vec![0.0; 16]).unwrap();
        let bad = CropBox { top: 2, left: 0, height: 3, width: 4 };
        assert!(resized_crop(&img, bad, 2, 2, Interpolation::Bilinear).is_err());
    }
}
