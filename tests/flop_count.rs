//! `conv_op::nominal_macs`, the FLOP basis of `byol bench`: counted from the geometry, one pass
//! for a plain forward, three (forward, weight and input gradients) when input and weight are
//! tracked, two when only the weight is (the stem, whose input is the image) — and the same
//! whichever kernel runs, including the kernels that skip taps reading only padding.
//! (Its own test binary: the counter is process-wide.)

use burn::tensor::{Device, Distribution, Tensor};
use byol::conv_op::{conv2d, nominal_macs};

#[test]
fn nominal_macs_follow_the_geometry_and_the_tracked_passes() {
    let dev = Device::flex();
    // 1×1 maps with a 3×3 padded kernel: the CPU kernel computes one tap of nine.
    for (h, stride) in [(1usize, 1usize), (6, 2)] {
        let (n, c, o, k, pad) = (3usize, 4usize, 5usize, 3usize, 1usize);
        let out = (h + 2 * pad - k) / stride + 1;
        let macs = n * o * c * k * k * out * out;
        let x = Tensor::<4>::random([n, c, h, h], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 1.0), &dev);
        let before = nominal_macs();
        let _ = conv2d(x.clone(), w.clone(), stride, pad);
        assert_eq!(nominal_macs() - before, macs, "plain forward, {h}×{h}");
        let wt = w.clone().autodiff().require_grad();
        let before = nominal_macs();
        let _ = conv2d(x.clone().autodiff(), wt.clone(), stride, pad);
        assert_eq!(nominal_macs() - before, 2 * macs, "untracked input, {h}×{h}");
        let before = nominal_macs();
        let _ = conv2d(x.autodiff().require_grad(), wt, stride, pad);
        assert_eq!(nominal_macs() - before, 3 * macs, "tracked input and weight, {h}×{h}");
    }
}
