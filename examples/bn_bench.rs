//! Times the fused training-mode BatchNorm+ReLU kernels of src/bn_op.rs on the CPU (flex)
//! backend: the forward pass and the backward pass, medians of 9 calls, at the layer shapes of
//! the CIFAR ResNet-18 (batch 64, widths 16 and 64) and of the `fashion-mnist` preset.
//! `cargo run --release --example bn_bench` (threads: RAYON_NUM_THREADS).
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;
use byol::bn_op::BatchNormBackend;
#[path = "common/timing.rs"]
mod timing;

fn tensor(v: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

fn run(dims: [usize; 4]) {
    let (c, len) = (dims[1], dims.iter().product::<usize>());
    let x = tensor((0..len).map(|i| ((i * 7919) % 1000) as f32 * 0.004 - 1.5).collect(), dims.to_vec());
    let dy = tensor((0..len).map(|i| ((i * 104729) % 1000) as f32 * 0.002 - 1.0).collect(), dims.to_vec());
    let gamma = tensor(vec![1.0; c], vec![c]);
    let beta = tensor(vec![0.1; c], vec![c]);
    let fwd = || Flex::byol_bn_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, true);
    let (_, mean, var) = fwd();
    let tf = timing::median_ms(9, || drop(fwd()));
    let tb = timing::median_ms(9, || {
        drop(Flex::byol_bn_train_backward(
            x.clone(),
            gamma.clone(),
            beta.clone(),
            mean.clone(),
            var.clone(),
            dy.clone(),
            1e-5,
            true,
        ))
    });
    let ns = |ms: f64| ms * 1e6 / len as f64;
    println!("{dims:?}: forward {tf:.2} ms ({:.2} ns/element), backward {tb:.2} ms ({:.2} ns/element)", ns(tf), ns(tb));
}

fn main() {
    byol::malloc_tuning::keep_freed_memory();
    for dims in [
        [64, 16, 32, 32],
        [64, 64, 32, 32],
        [64, 128, 16, 16],
        [64, 256, 8, 8],
        [64, 512, 4, 4],
        [128, 16, 14, 14],
        [128, 16, 7, 7],
        [128, 64, 2, 2],
        [128, 128, 1, 1],
        [128, 512, 1, 1],
    ] {
        run(dims);
    }
}
