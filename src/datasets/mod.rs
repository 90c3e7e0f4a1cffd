//! Data set readers: CIFAR-10/100 and STL-10 binaries, MNIST/Fashion-MNIST IDX files and image
//! folders, each implementing [`Dataset`] with u8 HWC images. BYOL pretrains on unlabelled
//! images and evaluates with labels (BYOL §4, App. C–D), so every reader offers both.

mod cifar;
mod idx;
mod image_folder;
mod records;
mod stl10;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Result};

pub use cifar::{Cifar, CifarKind};
pub use idx::{idx_files, read_idx, IdxDataset, FASHION_MNIST_CLASSES};
pub use image_folder::{FolderOptions, ImageFolder};
pub use stl10::{Stl10, STL10_ARCHIVE_DIR};

use crate::image::Dataset;

/// Names accepted by [`open`].
pub const DATASET_NAMES: [&str; 6] = ["cifar10", "cifar100", "stl10", "mnist", "fashion-mnist", "folder"];

/// Which part of a data set to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
    /// STL-10's 100,000 unlabelled images (or an unlabelled image folder).
    Unlabeled,
    /// STL-10 train followed by unlabeled, the usual STL-10 pretraining set.
    TrainUnlabeled,
}

impl Split {
    /// The name used on the command line (`train`, `test`, `unlabeled`, `train+unlabeled`).
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
            Split::TrainUnlabeled => "train+unlabeled",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "train" => Split::Train,
            "test" | "val" => Split::Test,
            "unlabeled" | "unlabelled" => Split::Unlabeled,
            "train+unlabeled" | "train+unlabelled" => Split::TrainUnlabeled,
            _ => bail!("unknown split {s:?}; valid: train, test, unlabeled, train+unlabeled"),
        })
    }
}

/// Canonical data set name (`CIFAR-10`, `cifar_10`, `Fashion_MNIST`… are accepted), or an
/// error listing the valid names.
pub fn canonical_name(name: &str) -> Result<&'static str> {
    let n = name.to_ascii_lowercase().replace(['_', '-'], "");
    Ok(match n.as_str() {
        "cifar10" => "cifar10",
        "cifar100" => "cifar100",
        "stl10" => "stl10",
        "mnist" => "mnist",
        "fashionmnist" | "fmnist" => "fashion-mnist",
        "folder" | "imagefolder" => "folder",
        _ => bail!("unknown data set {name:?}; valid names: {}", DATASET_NAMES.join(", ")),
    })
}

fn train_or_test(name: &str, split: Split) -> Result<bool> {
    match split {
        Split::Train => Ok(true),
        Split::Test => Ok(false),
        _ => bail!("data set {name} has no {split} split; valid: train, test"),
    }
}

/// Opens data set `name` (see [`DATASET_NAMES`]) stored in `dir`.
///
/// `dir` may be the folder holding the files or the folder the official archive was extracted
/// into (as [`crate::download::download`] leaves it). For `folder`, `dir/<split>` is used when
/// it exists, else `dir` itself for `train`/`unlabeled`.
pub fn open(name: &str, dir: &Path, split: Split) -> Result<Box<dyn Dataset>> {
    let name = canonical_name(name)?;
    Ok(match name {
        "cifar10" => Box::new(Cifar::open(CifarKind::Cifar10, dir, train_or_test(name, split)?)?),
        "cifar100" => Box::new(Cifar::open(CifarKind::Cifar100, dir, train_or_test(name, split)?)?),
        "stl10" => Box::new(Stl10::open(dir, split)?),
        "mnist" => Box::new(IdxDataset::open_mnist(dir, train_or_test(name, split)?, false)?),
        "fashion-mnist" => Box::new(IdxDataset::open_mnist(dir, train_or_test(name, split)?, true)?),
        _ => Box::new(open_folder(dir, split)?),
    })
}

/// Opens an image folder split as a concrete [`ImageFolder`] (whose `paths()` give the file of
/// each sample): `dir/<split>` when it exists, else `dir` for `train` and `unlabeled`.
pub fn open_folder(dir: &Path, split: Split) -> Result<ImageFolder> {
    let sub = dir.join(split.as_str());
    if sub.is_dir() {
        return ImageFolder::open(&sub);
    }
    match split {
        Split::Train | Split::Unlabeled => ImageFolder::open(dir),
        _ => bail!("{}: no {split}/ sub-folder for the {split} split", dir.display()),
    }
}

/// Environment variable naming a data root searched by [`find_fashion_mnist`].
pub const DATA_ENV: &str = "BYOL_DATA";

/// Where the Debian package `dataset-fashion-mnist` installs its gzipped IDX files.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Finds a Fashion-MNIST folder: `$BYOL_DATA` (or `$BYOL_DATA/fashion-mnist`),
/// `./data/fashion-mnist`, then the Debian package's [`DEBIAN_FASHION_MNIST`].
pub fn find_fashion_mnist() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(root) = std::env::var_os(DATA_ENV) {
        let root = PathBuf::from(root);
        candidates.push(root.join("fashion-mnist"));
        candidates.push(root);
    }
    candidates.push(PathBuf::from("data/fashion-mnist"));
    candidates.push(PathBuf::from(DEBIAN_FASHION_MNIST));
    let (img, _) = idx_files(true);
    candidates.into_iter().find(|d| d.join(img).is_file() || d.join(format!("{img}.gz")).is_file())
}
