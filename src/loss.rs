//! BYOL's regression loss (paper §3.1, Eq. 2): ‖q̄ − z̄′‖² = 2 − 2·cos(q, z′), averaged over the
//! batch. The symmetrised loss of one step sums the two directions (not their mean: averaging
//! halves the gradient scale; see BYOL.md).

use burn::tensor::Tensor;

/// Row-wise L2 normalisation like `torch.nn.functional.normalize` (norm clamped at 1e-12).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Mean over the batch of 2 − 2·cos(p, z). `z` must already be detached (stop-gradient).
pub fn regression_loss(p: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let cos = (l2_normalize(p) * l2_normalize(z)).sum_dim(1);
    (cos * (-2.0) + 2.0).mean()
}

/// Standard deviation across the batch of the L2-normalised rows, averaged over dimensions:
/// ≈ 1/√d for healthy representations, → 0 on collapse (the collapse monitor of solo-learn).
pub fn normalized_std(z: Tensor<2>) -> f32 {
    let zn = l2_normalize(z.inner());
    let [n, _] = zn.dims();
    if n < 2 {
        return 0.0;
    }
    let var = zn.var(0); // unbiased, [1, d]
    var.sqrt().mean().into_scalar::<f32>()
}
