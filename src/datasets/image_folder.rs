//! A folder of JPEG/PNG files, the layout of ImageNet-style data (BYOL §4, App. C): one
//! sub-folder per class (sorted names give the class indices, as torchvision's `ImageFolder`),
//! or a flat folder of unlabelled images. Images are decoded lazily in `get`.

use std::path::{Path, PathBuf};

use ::image::{ColorType, ImageDecoder, ImageReader};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::image::{Dataset, Image, Sample};

/// How to read a folder.
#[derive(Clone, Debug, Default)]
pub struct FolderOptions {
    /// Force 1 (grayscale) or 3 (RGB) channels. `None`: read every file's header at open time
    /// and use 1 only when all images are grayscale (this also catches unreadable files early;
    /// pass `Some(3)` to skip it on very large folders).
    pub channels: Option<usize>,
    /// `Some(true)`: sub-folders are classes; `Some(false)`: all images under the folder,
    /// recursively, without labels; `None`: labelled when the folder has sub-folders and no
    /// images of its own, unlabelled otherwise.
    pub labeled: Option<bool>,
}

/// A folder of images, labelled by sub-folder or unlabelled.
#[derive(Debug)]
pub struct ImageFolder {
    paths: Vec<PathBuf>,
    labels: Option<Vec<usize>>,
    classes: Vec<String>,
    channels: usize,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Sorted entries of `dir`, skipping hidden ones; `(subfolders, image files)`.
fn list(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list folder {}", dir.display()))?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            dirs.push(path);
        } else if is_image(&path) {
            files.push(path);
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

/// All image files under `dir`, recursively, in sorted order.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let (dirs, files) = list(dir)?;
    out.extend(files);
    for d in dirs {
        walk(&d, out)?;
    }
    Ok(())
}

/// Reads only the header of `path` and reports whether it is grayscale.
fn probe_gray(path: &Path) -> Result<bool> {
    let decoder = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .with_context(|| format!("cannot open image {}", path.display()))?
        .into_decoder()
        .with_context(|| format!("{}: undecodable image", path.display()))?;
    Ok(matches!(decoder.color_type(), ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16))
}

impl ImageFolder {
    /// Opens `dir` with default options (auto-detected labels and channels).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &FolderOptions::default())
    }

    /// Opens `dir` with explicit options.
    pub fn open_with(dir: &Path, opts: &FolderOptions) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a folder", dir.display());
        }
        if let Some(c) = opts.channels {
            if c != 1 && c != 3 {
                bail!("channels must be 1 or 3, got {c}");
            }
        }
        let (subdirs, top_files) = list(dir)?;
        let labeled = opts.labeled.unwrap_or(top_files.is_empty() && !subdirs.is_empty());
        let mut paths = Vec::new();
        let mut labels = None;
        let mut classes = Vec::new();
        if labeled {
            let mut l = Vec::new();
            for (class, sub) in subdirs.iter().enumerate() {
                let before = paths.len();
                walk(sub, &mut paths)?;
                if paths.len() == before {
                    bail!("{}: class folder has no JPEG/PNG images", sub.display());
                }
                l.resize(paths.len(), class);
                classes.push(sub.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            }
            labels = Some(l);
        } else {
            walk(dir, &mut paths)?;
        }
        if paths.is_empty() {
            bail!("{}: no JPEG/PNG images found", dir.display());
        }
        let channels = match opts.channels {
            Some(c) => c,
            None => {
                let gray: Vec<bool> = paths.par_iter().map(|p| probe_gray(p)).collect::<Result<_>>()?;
                if gray.iter().all(|&g| g) {
                    1
                } else {
                    3
                }
            }
        };
        Ok(Self { paths, labels, classes, channels })
    }

    /// File path of every sample, in sample order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.paths.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let Some(path) = self.paths.get(index) else {
            bail!("image folder index {index} out of range (len {})", self.len());
        };
        let img = ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .with_context(|| format!("cannot open image {}", path.display()))?
            .decode()
            .with_context(|| format!("{}: undecodable image", path.display()))?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        let data = if self.channels == 1 { img.into_luma8().into_raw() } else { img.into_rgb8().into_raw() };
        Ok(Sample {
            image: Image { width, height, channels: self.channels, data },
            label: self.labels.as_ref().map(|l| l[index]),
        })
    }

    fn num_classes(&self) -> Option<usize> {
        self.labels.as_ref().map(|_| self.classes.len())
    }

    fn channels(&self) -> usize {
        self.channels
    }

    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
}
