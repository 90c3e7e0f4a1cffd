//! Statistics of the random view parameters (BYOL App. B, Table 6) over many draws, each
//! checked within 4σ of its expected value.

use byol::augment::{view_rng, AugmentConfig, JitterOp, ViewConfig, ViewParams};

const N: usize = 20_000;

fn draws(cfg: &ViewConfig, h: usize, w: usize, view: u64) -> Vec<ViewParams> {
    (0..N as u64).map(|i| cfg.sample(&mut view_rng(7, 3, i, view), h, w)).collect()
}

/// Asserts that `count` of `N` Bernoulli(p) trials is within 4σ (exact for p ∈ {0, 1}).
fn assert_rate(what: &str, count: usize, p: f64) {
    let sigma = (p * (1.0 - p) / N as f64).sqrt();
    let rate = count as f64 / N as f64;
    assert!((rate - p).abs() <= 4.0 * sigma, "{what}: rate {rate:.4}, expected {p} ± {:.4}", 4.0 * sigma);
}

fn assert_mean(what: &str, xs: &[f64], mean: f64, sd: f64) {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let tol = 4.0 * sd / (xs.len() as f64).sqrt();
    assert!((m - mean).abs() <= tol, "{what}: mean {m:.5}, expected {mean:.5} ± {tol:.5}");
}

/// Mean and sd of the crop area fraction on a square image (ignoring pixel rounding):
/// s ~ U[a, 1], log r ~ U[−L, L], accepted iff s ≤ exp(−|log r|).
fn expected_area(a: f64, l: f64) -> (f64, f64) {
    let k = 100_000;
    let (mut z, mut s1, mut s2) = (0.0, 0.0, 0.0);
    for j in 0..k {
        let u = -l + 2.0 * l * (j as f64 + 0.5) / k as f64;
        let m = (-u.abs()).exp().min(1.0);
        if m > a {
            z += m - a;
            s1 += (m * m - a * a) / 2.0;
            s2 += (m * m * m - a * a * a) / 3.0;
        }
    }
    let mean = s1 / z;
    (mean, (s2 / z - mean * mean).sqrt())
}

#[test]
fn crop_area_and_ratio_follow_random_resized_crop() {
    let cfg = AugmentConfig::imagenet().view1;
    for (h, w) in [(512, 512), (300, 500)] {
        let area = (h * w) as f64;
        let mut fracs = Vec::with_capacity(N);
        for p in draws(&cfg, h, w, 0) {
            let c = p.crop;
            assert!(c.top + c.height <= h && c.left + c.width <= w, "{c:?} outside {h}x{w}");
            let (ch, cw) = (c.height as f64, c.width as f64);
            // Rounding w and h to integers moves area and ratio by at most this much.
            let area_slack = (0.5 * (ch + cw) + 0.25) / area;
            let frac = ch * cw / area;
            assert!(frac >= 0.08 - area_slack && frac <= 1.0, "area fraction {frac} out of [0.08, 1]");
            let log_ratio = (cw / ch).ln();
            let ratio_slack = 0.5 / cw + 0.5 / ch + 1e-9;
            assert!(
                log_ratio >= (3.0f64 / 4.0).ln() - ratio_slack && log_ratio <= (4.0f64 / 3.0).ln() + ratio_slack,
                "aspect ratio {} out of [3/4, 4/3]",
                cw / ch
            );
            fracs.push(frac);
        }
        if h == w {
            let (mean, sd) = expected_area(0.08, (4.0f64 / 3.0).ln());
            assert_mean("crop area fraction", &fracs, mean, sd);
        }
    }
}

#[test]
fn crop_falls_back_to_central_crop_for_extreme_images() {
    let cfg = AugmentConfig::imagenet().view1;
    // A 1×1000 strip can never fit a crop with ratio ≤ 4/3 and area ≥ 8%: fallback, clamped ratio.
    let p = cfg.sample(&mut view_rng(1, 0, 0, 0), 10, 1000);
    assert_eq!((p.crop.height, p.crop.width), (10, 13));
    assert_eq!((p.crop.top, p.crop.left), (0, (1000 - 13) / 2));
}

#[test]
fn probabilities_match_table_6_per_pipeline() {
    let cfg = AugmentConfig::imagenet();
    for (view, vc) in [(0u64, &cfg.view1), (1, &cfg.view2)] {
        let ps = draws(vc, 256, 256, view);
        let count = |f: &dyn Fn(&ViewParams) -> bool| ps.iter().filter(|p| f(p)).count();
        assert_rate("flip", count(&|p| p.flip), vc.flip_p);
        assert_rate("jitter", count(&|p| p.jitter.is_some()), vc.jitter_p);
        assert_rate("grayscale", count(&|p| p.grayscale), vc.grayscale_p);
        assert_rate("blur", count(&|p| p.blur_sigma.is_some()), vc.blur_p);
        assert_rate("solarize", count(&|p| p.solarize), vc.solarize_p);
    }
    let cifar = AugmentConfig::cifar();
    let ps = draws(&cifar.view2, 32, 32, 1);
    assert_eq!(ps.iter().filter(|p| p.blur_sigma.is_some()).count(), 0);
    assert_rate("cifar solarize", ps.iter().filter(|p| p.solarize).count(), 0.2);
}

#[test]
fn jitter_factors_and_order_and_blur_sigma() {
    let cfg = AugmentConfig::imagenet().view1;
    let ps = draws(&cfg, 64, 64, 0);
    let jit: Vec<_> = ps.iter().filter_map(|p| p.jitter.clone()).collect();
    let (mut b, mut c, mut s, mut h) = (vec![], vec![], vec![], vec![]);
    let mut first = [0usize; 4];
    for j in &jit {
        b.push(j.brightness.unwrap() as f64);
        c.push(j.contrast.unwrap() as f64);
        s.push(j.saturation.unwrap() as f64);
        h.push(j.hue.unwrap() as f64);
        let mut sorted = j.order.to_vec();
        sorted.sort_by_key(|o| *o as usize);
        assert_eq!(sorted, [JitterOp::Brightness, JitterOp::Contrast, JitterOp::Saturation, JitterOp::Hue]);
        first[j.order[0] as usize] += 1;
    }
    let u_sd = |lo: f64, hi: f64| (hi - lo) / 12f64.sqrt();
    for (name, xs, lo, hi) in
        [("brightness", &b, 0.6, 1.4), ("contrast", &c, 0.6, 1.4), ("saturation", &s, 0.8, 1.2), ("hue", &h, -0.1, 0.1)]
    {
        assert!(xs.iter().all(|&x| x >= lo - 1e-6 && x <= hi + 1e-6), "{name} outside [{lo}, {hi}]");
        assert_mean(name, xs, (lo + hi) / 2.0, u_sd(lo, hi));
    }
    let n = jit.len() as f64;
    for (op, &k) in first.iter().enumerate() {
        let sigma = (0.25 * 0.75 / n).sqrt();
        assert!((k as f64 / n - 0.25).abs() <= 4.0 * sigma, "op {op} first in {k} of {n} orders");
    }
    let sig: Vec<f64> = ps.iter().filter_map(|p| p.blur_sigma.map(f64::from)).collect();
    assert!(sig.iter().all(|&x| (0.1..=2.0).contains(&x)));
    assert_mean("blur sigma", &sig, 1.05, u_sd(0.1, 2.0));
    // Zero strengths are skipped entirely (torchvision's None factors).
    let gray = AugmentConfig::grayscale().view1;
    let j = draws(&gray, 28, 28, 0).into_iter().find_map(|p| p.jitter).unwrap();
    assert!(j.saturation.is_none() && j.hue.is_none() && j.brightness.is_some());
}
