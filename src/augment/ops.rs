//! Pure augmentation ops on float CHW images in [0, 1], matching
//! `torchvision.transforms.v2.functional` (BYOL App. B, Table 6 lists which ones are used).
//! Colour ops are no-ops on 1-channel images where torchvision's are.

use super::ChwImage;
use anyhow::{ensure, Result};

/// Luma weights of `rgb_to_grayscale` (ITU-R 601-2, as in torchvision and BYOL Table 6).
pub const GRAY_WEIGHTS: [f32; 3] = [0.2989, 0.587, 0.114];

/// Horizontal flip (`hflip`): reverses every row.
pub fn hflip(img: &mut ChwImage) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// `_blend`: `clamp(a·ratio + b·(1 − ratio), 0, 1)`.
#[inline]
fn blend(a: f32, b: f32, ratio: f32) -> f32 {
    (a * ratio + b * (1.0 - ratio)).clamp(0.0, 1.0)
}

/// `adjust_brightness`: multiply by `factor`, clamp to [0, 1].
pub fn adjust_brightness(img: &mut ChwImage, factor: f32) {
    for v in &mut img.data {
        *v = (*v * factor).clamp(0.0, 1.0);
    }
}

/// The grayscale plane `0.2989 r + 0.587 g + 0.114 b` (the image itself for 1 channel).
pub fn grayscale_plane(img: &ChwImage) -> Vec<f32> {
    let n = img.plane();
    if img.channels == 1 {
        return img.data.clone();
    }
    let (r, rest) = img.data.split_at(n);
    let (g, b) = rest.split_at(n);
    r.iter()
        .zip(g)
        .zip(&b[..n])
        .map(|((&r, &g), &b)| r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2])
        .collect()
}

/// `adjust_contrast`: blend with the mean of the image's grayscale version (one scalar per image).
pub fn adjust_contrast(img: &mut ChwImage, factor: f32) {
    let gray = grayscale_plane(img);
    let mean = (gray.iter().map(|&v| v as f64).sum::<f64>() / gray.len().max(1) as f64) as f32;
    for v in &mut img.data {
        *v = blend(*v, mean, factor);
    }
}

/// `adjust_saturation`: blend with the grayscale image (pixelwise). No-op for 1 channel.
pub fn adjust_saturation(img: &mut ChwImage, factor: f32) {
    if img.channels != 3 {
        return;
    }
    let gray = grayscale_plane(img);
    for plane in img.data.chunks_exact_mut(gray.len()) {
        for (v, &g) in plane.iter_mut().zip(&gray) {
            *v = blend(*v, g, factor);
        }
    }
}

/// `rgb_to_grayscale(num_output_channels = channels)`: every channel becomes the luma.
pub fn to_grayscale(img: &mut ChwImage) {
    if img.channels != 3 {
        return;
    }
    let gray = grayscale_plane(img);
    for plane in img.data.chunks_exact_mut(gray.len()) {
        plane.copy_from_slice(&gray);
    }
}

/// `adjust_hue`: RGB → HSV, `h ← (h + shift) mod 1`, HSV → RGB, in torchvision's float32
/// arithmetic (`_rgb_to_hsv` / `_hsv_to_rgb`). No-op for 1 channel or a zero shift.
pub fn adjust_hue(img: &mut ChwImage, shift: f32) {
    if img.channels != 3 || shift == 0.0 {
        return;
    }
    let n = img.plane();
    let (r, rest) = img.data.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (h, s, v) = rgb_to_hsv(*r, *g, *b);
        let h = rem_euclid1(h + shift);
        (*r, *g, *b) = hsv_to_rgb(h, s, v);
    }
}

/// torch `remainder(x, 1.0)`: result in [0, 1).
#[inline]
fn rem_euclid1(x: f32) -> f32 {
    // Fast exact paths for the usual range (h ∈ [0, 1), |shift| ≤ 0.5).
    let m = if (0.0..1.0).contains(&x) {
        x
    } else if (-1.0..0.0).contains(&x) {
        x + 1.0
    } else if (1.0..2.0).contains(&x) {
        x - 1.0
    } else {
        x - x.floor()
    };
    if m >= 1.0 {
        0.0
    } else {
        m
    }
}

#[inline]
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let range = maxc - minc;
    let s = range / if eqc { 1.0 } else { maxc };
    let div = if eqc { 1.0 } else { range };
    // rc, gc, bc = (maxc − channel) / div; only the two each branch needs are computed.
    let h = if maxc == r {
        (maxc - b) / div - (maxc - g) / div
    } else if maxc == g {
        2.0 + (maxc - r) / div - (maxc - b) / div
    } else {
        4.0 + (maxc - g) / div - (maxc - r) / div
    };
    // torch: fmod(h / 6 + 1, 1) with h / 6 + 1 ∈ [5/6, 11/6]: subtracting 1 is exact there.
    let t = h * (1.0 / 6.0) + 1.0;
    (if t >= 1.0 { t - 1.0 } else { t }, s, maxc)
}

#[inline]
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    // h ∈ [0, 1] so h6 ≥ 0 and truncation is floor.
    let i = (h6 as i32) as f32;
    let f = h6 - i;
    let sxf = s * f;
    let one_minus_s = 1.0 - s;
    let q = ((1.0 - sxf) * v).clamp(0.0, 1.0);
    let t = ((sxf + one_minus_s) * v).clamp(0.0, 1.0);
    let p = (one_minus_s * v).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// `solarize`: `x ≥ threshold ? 1 − x : x`.
pub fn solarize(img: &mut ChwImage, threshold: f32) {
    for v in &mut img.data {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}

/// `normalize`: `(x − mean[c]) / std[c]`; `mean`/`std` have one entry per channel.
pub fn normalize(img: &mut ChwImage, mean: &[f32], std: &[f32]) -> Result<()> {
    ensure!(
        mean.len() == img.channels && std.len() == img.channels,
        "normalize: mean has {} and std {} entries, the image has {} channels",
        mean.len(),
        std.len(),
        img.channels
    );
    let n = img.plane();
    for ((plane, &m), &s) in img.data.chunks_exact_mut(n).zip(mean).zip(std) {
        let inv = 1.0 / s;
        for v in plane {
            *v = (*v - m) * inv;
        }
    }
    Ok(())
}

/// The normalized 1-D Gaussian kernel of `_get_gaussian_kernel1d`:
/// `softmax(−(x/σ)²)` over `x = linspace(−lim, lim, k)`, `lim = (k − 1) / (2√2)`.
pub fn gaussian_kernel1d(kernel: usize, sigma: f32) -> Vec<f32> {
    let half = (kernel as f64 - 1.0) / 2.0;
    let pdf: Vec<f64> = (0..kernel)
        .map(|i| {
            let x = (i as f64 - half) / sigma as f64;
            (-0.5 * x * x).exp()
        })
        .collect();
    let sum: f64 = pdf.iter().sum();
    pdf.iter().map(|&p| (p / sum) as f32).collect()
}

/// Reflect-padding index (`torch.nn.functional.pad(mode="reflect")`, edge not repeated),
/// extended periodically so that it is defined for any padding.
#[inline]
pub(crate) fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// `gaussian_blur` with an odd `kernel` (same in both directions), `sigma` > 0 and reflect
/// padding, computed separably (rows then columns).
pub fn gaussian_blur(img: &mut ChwImage, kernel: usize, sigma: f32) -> Result<()> {
    ensure!(kernel % 2 == 1, "gaussian_blur: kernel size {kernel} must be odd");
    ensure!(sigma > 0.0 && sigma.is_finite(), "gaussian_blur: sigma {sigma} must be > 0");
    let k = gaussian_kernel1d(kernel, sigma);
    let pad = kernel / 2;
    // Taps below 1e-10 (of a kernel summing to 1) cannot change a float32 result of values in
    // [0, 1] beyond ~1e-9; dropping them makes small-σ blurs much cheaper.
    let r = (0..=pad).rev().find(|&d| k[pad + d] >= 1e-10).unwrap_or(0);
    let kk = &k[pad..=pad + r]; // kk[d] = weight at distance d (the kernel is symmetric)
    let (h, w) = (img.height, img.width);
    let mut padded = vec![0.0f32; w + 2 * r];
    let mut tmp = vec![0.0f32; h * w];
    for plane in img.data.chunks_exact_mut(h * w) {
        // Horizontal pass: plane → tmp.
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            padded[r..r + w].copy_from_slice(row);
            for d in 1..=r {
                padded[r - d] = row[reflect(-(d as isize), w)];
                padded[r + w - 1 + d] = row[reflect((w - 1 + d) as isize, w)];
            }
            let out = &mut tmp[y * w..(y + 1) * w];
            for (o, &p) in out.iter_mut().zip(&padded[r..r + w]) {
                *o = kk[0] * p;
            }
            for (d, &kv) in kk.iter().enumerate().skip(1) {
                let (a, b) = (&padded[r + d..r + d + w], &padded[r - d..r - d + w]);
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o += kv * (a + b);
                }
            }
        }
        // Vertical pass: tmp → plane, whole rows at a time.
        for y in 0..h {
            let out = &mut plane[y * w..(y + 1) * w];
            out.copy_from_slice(&tmp[y * w..(y + 1) * w]);
            out.iter_mut().for_each(|o| *o *= kk[0]);
            for (d, &kv) in kk.iter().enumerate().skip(1) {
                let ya = reflect(y as isize + d as isize, h);
                let yb = reflect(y as isize - d as isize, h);
                let (a, b) = (&tmp[ya * w..(ya + 1) * w], &tmp[yb * w..(yb + 1) * w]);
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o += kv * (a + b);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_torch_reflect_padding() {
        // torch pad([0,1,2,3], (3,3), mode="reflect") = [3,2,1,0,1,2,3,2,1,0]
        let idx: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn hue_round_trip_is_identity_for_zero_shift_through_hsv() {
        for &(r, g, b) in &[(0.2f32, 0.5, 0.9), (0.9, 0.1, 0.1), (0.3, 0.3, 0.3), (0.0, 1.0, 0.5)] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() < 1e-6 && (g - g2).abs() < 1e-6 && (b - b2).abs() < 1e-6);
        }
    }

    /// Direct 2-D convolution with reflect padding (torchvision's definition), all taps.
    fn naive_blur(img: &ChwImage, kernel: usize, sigma: f32) -> Vec<f32> {
        let k = gaussian_kernel1d(kernel, sigma);
        let (h, w, p) = (img.height as isize, img.width as isize, (kernel / 2) as isize);
        let mut out = vec![0.0f32; img.data.len()];
        for c in 0..img.channels {
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0.0f64;
                    for (i, &ky) in k.iter().enumerate() {
                        for (j, &kx) in k.iter().enumerate() {
                            let sy = reflect(y + i as isize - p, h as usize);
                            let sx = reflect(x + j as isize - p, w as usize);
                            let v = img.data[c * img.plane() + sy * img.width + sx];
                            s += (ky * kx) as f64 * v as f64;
                        }
                    }
                    out[(c * h as usize + y as usize) * w as usize + x as usize] = s as f32;
                }
            }
        }
        out
    }

    #[test]
    fn separable_trimmed_blur_matches_direct_convolution() {
        let data: Vec<f32> = (0..3 * 26 * 30).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
        let img = ChwImage::new(3, 26, 30, data).unwrap();
        for (kernel, sigma) in [(23, 0.1f32), (23, 0.7), (23, 2.0), (5, 1.3), (3, 2.0)] {
            let mut got = img.clone();
            gaussian_blur(&mut got, kernel, sigma).unwrap();
            let want = naive_blur(&img, kernel, sigma);
            let err = got.data.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 2e-6, "kernel {kernel} sigma {sigma}: max error {err}");
        }
        assert!(gaussian_blur(&mut img.clone(), 4, 1.0).is_err());
    }

    #[test]
    fn gaussian_kernel_is_normalized_and_symmetric() {
        let k = gaussian_kernel1d(23, 1.3);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((k[0] - k[22]).abs() < 1e-9 && k[11] > k[10]);
    }
}
