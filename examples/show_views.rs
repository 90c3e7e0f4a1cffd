//! Writes a PNG strip of Fashion-MNIST samples: eval image, view T, view T′ (denormalised),
//! to check the augmentation pipeline by eye. Usage: show_views OUT.png
fn main() {
    let out = std::env::args().nth(1).unwrap_or("views.png".into());
    let dir = byol::datasets::find_fashion_mnist().expect("fashion-mnist");
    let ds = byol::datasets::open("fashion-mnist", &dir, byol::datasets::Split::Train).unwrap();
    let aug = byol::augment::preset("grayscale").unwrap();
    let a = byol::augment::Augmenter::new(aug.clone(), 0).unwrap();
    let (n, s) = (8usize, 28usize);
    let mut img = image::GrayImage::new((3 * s) as u32, (n * s) as u32);
    for i in 0..n {
        let sample = ds.get(i).unwrap();
        let mut e = vec![0f32; s * s];
        a.eval_into(&sample.image, &mut e).unwrap();
        let (v1, v2) = a.augment_pair(&sample.image, 0, i as u64).unwrap();
        for (col, v) in [e, v1, v2].iter().enumerate() {
            for y in 0..s {
                for x in 0..s {
                    let val = v[y * s + x] * aug.std[0] + aug.mean[0];
                    img.put_pixel(
                        (col * s + x) as u32,
                        (i * s + y) as u32,
                        image::Luma([(val.clamp(0.0, 1.0) * 255.0) as u8]),
                    );
                }
            }
        }
    }
    image::imageops::resize(&img, (3 * s * 4) as u32, (n * s * 4) as u32, image::imageops::FilterType::Nearest)
        .save(&out)
        .unwrap();
}
