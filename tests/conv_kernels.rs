//! The im2col + GEMM convolution (src/conv.rs, src/conv_op.rs) against burn's own `conv2d`:
//! forward, input gradient and weight gradient through autodiff, for every kind of convolution a
//! ResNet has (3×3 stride 1/2, 1×1 downsample, 7×7 stem), plus thread-count independence; and the
//! max pooling of src/pool_op.rs against burn's `max_pool2d` (values, ties, gradient).

use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use byol::conv::{self, ConvGeom};

/// (n, c, h, w, o, k, stride, pad)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);
const CASES: &[Case] = &[
    (2, 3, 9, 9, 4, 3, 1, 1),
    (3, 5, 8, 7, 6, 3, 2, 1),
    (2, 4, 11, 11, 3, 7, 2, 3),
    (2, 8, 6, 6, 16, 1, 2, 0),
    (2, 8, 6, 6, 5, 1, 1, 0),
    (1, 2, 4, 4, 3, 3, 1, 0),
    (17, 3, 5, 5, 2, 3, 1, 1),
    // 1×1 and 2×2→1×1 maps: taps that only read padding are dropped (src/unfold.rs).
    (2, 3, 1, 1, 4, 3, 1, 1),
    (3, 4, 2, 2, 5, 3, 2, 1),
    (2, 2, 1, 3, 3, 3, 1, 1),
    // Wide outputs (≥ 16 columns, stride 1, k > 1) take the padded-width unfolding
    // (src/wide_unfold.rs), also without padding (junk columns then wrap onto image columns).
    (2, 3, 20, 18, 4, 3, 1, 1),
    (2, 2, 17, 40, 3, 5, 1, 2),
    (3, 2, 6, 20, 3, 3, 1, 0),
    // Strided wide outputs take the gather table.
    (2, 2, 36, 36, 3, 3, 2, 1),
    // 3×3 stride-1 "same" convolutions with channels in eights whose maps fill at least half
    // of their vectors take the direct kernels (src/direct_conv.rs) on AVX-512 and AVX2
    // processors: rows of 16 and 32, 8×8 and 4×4 maps (several rows per vector; several images
    // per tile), 28 columns, 7×7 and 3×5 maps (a partial last vector); 17 images make two full
    // weight-gradient chunks and a partial one; 3 input channels (a stem) have no direct input
    // gradient. The direct weight gradient needs the output channels in whole vectors (16 with
    // AVX-512, 8 with AVX2); 8 or 24 output channels take GEMM there on AVX-512.
    (17, 8, 16, 16, 16, 3, 1, 1),
    (17, 8, 16, 16, 8, 3, 1, 1),
    (2, 16, 5, 32, 24, 3, 1, 1),
    (3, 3, 16, 32, 16, 3, 1, 1),
    (3, 8, 8, 8, 16, 3, 1, 1),
    (11, 16, 4, 4, 16, 3, 1, 1),
    (2, 8, 4, 28, 8, 3, 1, 1),
    (5, 16, 7, 7, 16, 3, 1, 1),
    (9, 8, 3, 5, 8, 3, 1, 1),
    // Many input channels (46 blocks of 3 and a single one in the weight gradient).
    (2, 136, 4, 4, 16, 3, 1, 1),
    // 2×2 maps (4 pixels): direct with AVX2 (half of 8 lanes), not with AVX-512.
    (3, 8, 2, 2, 8, 3, 1, 1),
];

/// Cases the direct kernels must take on this processor (by its vector length).
fn expect_direct(g: &ConvGeom) -> bool {
    let lanes = match byol::simd::isa() {
        Some(isa) => isa.lanes(),
        None => return false,
    };
    let hw = g.h * g.w;
    g.k == 3 && g.stride == 1 && g.pad == 1 && 2 * hw >= hw.div_ceil(lanes) * lanes && g.o.is_multiple_of(8)
}

fn max_rel(a: &Tensor<4>, b: &Tensor<4>) -> f32 {
    let d: f32 = (a.clone() - b.clone()).abs().max().into_scalar();
    let s: f32 = b.clone().abs().max().into_scalar();
    d / s.max(1e-12)
}

#[test]
fn matches_burn_conv2d_forward_and_gradients() {
    let dev = Device::flex();
    for &(n, c, h, w, o, k, s, p) in CASES {
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &dev);
        let wt = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 0.3), &dev);
        let g = Tensor::<4>::random(
            [n, o, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let run = |ours: bool| {
            let xa = x.clone().autodiff().require_grad();
            let wa = wt.clone().autodiff().require_grad();
            let y = if ours {
                byol::conv_op::conv2d(xa.clone(), wa.clone(), s, p)
            } else {
                burn_conv2d(xa.clone(), wa.clone(), None, ConvOptions::new([s, s], [p, p], [1, 1], 1))
            };
            let grads = (y.clone() * g.clone().autodiff()).sum().backward();
            (y.inner(), xa.grad(&grads).expect("dx"), wa.grad(&grads).expect("dw"))
        };
        let case = format!("case {:?}", (n, c, h, w, o, k, s, p));
        let geom = ConvGeom::new([n, c, h, w], [o, c, k, k], s, p).expect("geometry");
        assert_eq!(byol::direct_conv::applies(&geom), expect_direct(&geom), "{case}: direct kernels");
        let before = conv::calls();
        let (y1, dx1, dw1) = run(true);
        let after = conv::calls();
        assert!(
            (0..3).all(|i| after[i] > before[i]),
            "{case}: the autodiff graph did not use the kernels of byol::conv"
        );
        // The same call without autodiff takes the same (flex) path.
        let plain = byol::conv_op::conv2d(x.clone(), wt.clone(), s, p);
        assert!(max_rel(&plain, &y1) == 0.0, "autodiff and plain forward differ");
        let (y0, dx0, dw0) = run(false);
        assert_eq!(y1.dims(), y0.dims(), "{case}");
        for (what, a, b) in [("output", &y1, &y0), ("input grad", &dx1, &dx0), ("weight grad", &dw1, &dw0)] {
            let e = max_rel(a, b);
            // Float32 sums of up to ~1500 products in another order: a few 1e-6 relative to the
            // largest value (a wrong tap or mask gives errors of order 1).
            assert!(e < 1e-5, "{case}: {what} differs from burn's conv2d by {e:e}");
        }
    }
}

/// On an AVX-512 processor the AVX2 kernels are not the default; this runs the comparison
/// above again in a child process that stops at AVX2 (`BYOL_SIMD=avx2`).
#[test]
fn avx2_kernels_match_burn_too() {
    if byol::simd::isa() != Some(byol::simd::Isa::Avx512) || std::env::var_os("BYOL_SIMD").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "matches_burn_conv2d_forward_and_gradients", "--nocapture"])
        .env("BYOL_SIMD", "avx2")
        .output()
        .expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "AVX2 run failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 passed"), "the AVX2 run did not run the comparison:\n{text}");
}

#[test]
fn results_do_not_depend_on_thread_count() {
    // A strided geometry (gather table), a wide one (padded-width unfolding) and one for the
    // direct kernels.
    for (x_dims, o, stride) in
        [([19, 6, 10, 10], 7, 2), ([19, 6, 10, 18], 7, 1), ([19, 8, 6, 16], 8, 1), ([19, 8, 7, 7], 16, 1)]
    {
        let g = ConvGeom::new(x_dims, [o, x_dims[1], 3, 3], stride, 1).expect("geometry");
        let x: Vec<f32> = (0..x_dims.iter().product()).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let w: Vec<f32> = (0..o * x_dims[1] * 9).map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5).collect();
        let dy: Vec<f32> = (0..19 * o * g.pixels()).map(|i| ((i * 31) % 101) as f32 / 50.0 - 1.0).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                (conv::forward(&g, &x, &w), conv::backward_input(&g, &dy, &w), conv::backward_weight(&g, &x, &dy))
            })
        };
        let one = run(1);
        let three = run(3);
        assert!(one.0 == three.0 && one.1 == three.1 && one.2 == three.2, "results changed with the thread count");
        assert!(one.2.iter().any(|v| *v != 0.0));
    }
}

#[test]
fn impossible_geometry_is_rejected() {
    assert!(ConvGeom::new([1, 3, 2, 2], [4, 3, 5, 5], 1, 1).is_none(), "kernel larger than padded input");
    assert!(ConvGeom::new([1, 3, 8, 8], [4, 2, 3, 3], 1, 1).is_none(), "channel mismatch");
    assert!(ConvGeom::new([1, 3, 8, 8], [4, 3, 3, 3], 0, 1).is_none(), "stride 0");
}

#[test]
fn max_pool_matches_burn_forward_and_gradient() {
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    let dev = Device::flex();
    for (n, c, h, w, k, s, p) in
        [(2, 3, 14, 14, 3, 2, 1), (1, 2, 7, 9, 3, 2, 1), (2, 2, 6, 6, 2, 2, 0), (1, 1, 5, 5, 3, 1, 1)]
    {
        // Integer-valued input: ties inside windows exercise the first-maximum rule.
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Uniform(-3.0, 3.0), &dev).round();
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let g = Tensor::<4>::random([n, c, oh, ow], Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let xa = x.clone().autodiff().require_grad();
            let y = if ours {
                byol::pool_op::max_pool2d(xa.clone(), k, s, p)
            } else {
                max_pool2d(xa.clone(), MaxPoolOptions::new([k, k]).with_stride([s, s]).with_padding([p, p]))
            };
            let grads = (y.clone() * g.clone().autodiff()).sum().backward();
            (y.inner(), xa.grad(&grads).expect("dx"))
        };
        let ((y1, dx1), (y0, dx0)) = (run(true), run(false));
        let case = format!("{:?}", (n, c, h, w, k, s, p));
        assert_eq!(y1.dims(), y0.dims(), "{case}");
        assert!(max_rel(&y1, &y0) == 0.0, "{case}: pooled values differ");
        assert!(max_rel(&dx1, &dx0) < 1e-6, "{case}: input gradients differ");
    }
}

#[test]
fn max_pool_propagates_the_first_nan() {
    let dev = Device::flex();
    // One 4×4 plane, 2×2 windows of stride 2: NaNs at (0, 1) and (1, 0) share the first window;
    // the first in row-major order, (0, 1), takes its gradient.
    let mut v = vec![1.0f32; 16];
    v[1] = f32::NAN;
    v[4] = f32::NAN;
    v[10] = 5.0;
    let x = Tensor::<4>::from_data(burn::tensor::TensorData::new(v, [1, 1, 4, 4]), &dev);
    let xa = x.autodiff().require_grad();
    let y = byol::pool_op::max_pool2d(xa.clone(), 2, 2, 0);
    let yv: Vec<f32> = y.clone().inner().into_data().try_to_vec::<f32>().expect("f32");
    assert!(yv[0].is_nan() && yv[1] == 1.0 && yv[2] == 1.0 && yv[3] == 5.0, "pooled {yv:?}");
    let grads = y.sum().backward();
    let dx: Vec<f32> = xa.grad(&grads).expect("dx").into_data().try_to_vec::<f32>().expect("f32");
    assert_eq!(dx[1], 1.0, "gradient of the first NaN: {dx:?}");
    assert_eq!(dx[4], 0.0, "the second NaN takes none: {dx:?}");
    assert_eq!(dx[10], 1.0, "{dx:?}");
    assert_eq!(dx.iter().sum::<f32>(), 4.0, "one gradient per window: {dx:?}");
}
