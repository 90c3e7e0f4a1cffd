//! Data for the evaluation commands (App. C/D): opening a split of a named data set (with
//! Fashion-MNIST auto-discovery), and choosing the evaluation transform (test time: resize and
//! center crop, then the normalization the encoder was trained with).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::augment::AugmentConfig;
use crate::config::PretrainConfig;
use crate::image::Dataset;
use crate::subset::Subset;

/// The folder of data set `name`: `dir` when given, else auto-discovery (Fashion-MNIST only).
pub fn data_dir(name: &str, dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    match crate::datasets::canonical_name(name)? {
        "fashion-mnist" => crate::datasets::find_fashion_mnist().context(
            "Fashion-MNIST not found: install the Debian package dataset-fashion-mnist, set BYOL_DATA, or give --data",
        ),
        other => anyhow::bail!("give --data: the folder of the {other} data set"),
    }
}

/// Opens `split` of data set `name`, keeping the first `limit` samples (0 = all).
pub fn open_split(name: &str, dir: Option<&Path>, split: &str, limit: usize) -> Result<Arc<dyn Dataset>> {
    let dir = data_dir(name, dir)?;
    let ds: Arc<dyn Dataset> = Arc::from(
        crate::datasets::open(name, &dir, split.parse()?)
            .with_context(|| format!("opening the {split} split of {name} in {}", dir.display()))?,
    );
    Subset::first(ds, limit)
}

/// The default augmentation preset for a data set: `grayscale` for (Fashion-)MNIST, `cifar` for
/// CIFAR, `imagenet` otherwise (STL-10, image folders).
pub fn default_augment(dataset: &str) -> &'static str {
    match crate::datasets::canonical_name(dataset) {
        Ok("mnist" | "fashion-mnist") => "grayscale",
        Ok("cifar10" | "cifar100") => "cifar",
        _ => "imagenet",
    }
}

/// The transform used to embed `dataset`: the preset `augment` when given, else the run's own
/// (preset and image size) when it pretrained on the same data set, else [`default_augment`].
/// `image_size` > 0 sets the evaluation resize and crop (and the view size).
pub fn eval_augment(
    dataset: &str,
    augment: Option<&str>,
    run: Option<&PretrainConfig>,
    image_size: usize,
) -> Result<AugmentConfig> {
    let same_data = run.is_some_and(|r| {
        crate::datasets::canonical_name(&r.data.dataset).ok() == crate::datasets::canonical_name(dataset).ok()
    });
    let mut aug = match (augment, run) {
        (Some(a), _) => crate::augment::preset(a)?,
        (None, Some(r)) if same_data => crate::pretrain::augment_config(r)?,
        _ => crate::augment::preset(default_augment(dataset))?,
    };
    if image_size > 0 {
        aug.view1.size = image_size;
        aug.view2.size = image_size;
        aug.view1.blur_kernel = None;
        aug.view2.blur_kernel = None;
        aug.eval.crop = image_size;
        aug.eval.resize = image_size;
    }
    Ok(aug)
}

/// The fine-tuning / linear-evaluation training augmentation of App. C: random resized crop and
/// horizontal flip only (no colour, blur or solarization), at the evaluation crop size.
pub fn crop_flip(aug: &AugmentConfig) -> AugmentConfig {
    let mut out = aug.clone();
    for v in [&mut out.view1, &mut out.view2] {
        v.size = aug.eval.crop;
        v.crop_scale = [0.08, 1.0];
        v.flip_p = 0.5;
        v.jitter_p = 0.0;
        v.grayscale_p = 0.0;
        v.blur_p = 0.0;
        v.blur_kernel = None;
        v.solarize_p = 0.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{preset, Augmenter};

    /// The fine-tuning / crop+flip-probe transform draws only a crop and a flip, redrawn every
    /// epoch, reproducibly from the seed.
    #[test]
    fn crop_flip_draws_only_crop_and_flip_per_epoch_and_seed() {
        let base = preset("imagenet").unwrap();
        let aug = crop_flip(&base);
        assert_eq!(aug.view1.size, base.eval.crop);
        let a = Augmenter::new(aug.clone(), 5).unwrap();
        let draws: Vec<_> = (0..40).map(|epoch| a.view_params(epoch, 3, 0, 300, 400)).collect();
        for p in &draws {
            assert!(p.jitter.is_none() && !p.grayscale && p.blur_sigma.is_none() && !p.solarize, "{p:?}");
            let area = (p.crop.height * p.crop.width) as f64 / (300.0 * 400.0);
            assert!((0.07..=1.0).contains(&area), "crop area fraction {area}");
        }
        let flips = draws.iter().filter(|p| p.flip).count();
        assert!((8..=32).contains(&flips), "{flips} flips in 40 epochs");
        let distinct: std::collections::HashSet<_> =
            draws.iter().map(|p| (p.crop.top, p.crop.left, p.crop.height)).collect();
        assert!(distinct.len() > 30, "only {} distinct crops in 40 epochs", distinct.len());
        let again = Augmenter::new(aug, 5).unwrap();
        assert!((0..40).all(|e| again.view_params(e, 3, 0, 300, 400) == draws[e as usize]));
    }
}
