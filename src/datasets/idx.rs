//! MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) in the IDX format,
//! raw or gzip-compressed. Small grayscale sets used for quick BYOL smoke runs.
//!
//! IDX: magic `00 00 08 ndim` (08 = unsigned byte), then `ndim` big-endian u32 sizes, then the
//! data. Images: ndim 3 (count, rows, cols); labels: ndim 1 (count).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;

use super::records::find_dir;
use crate::image::{Dataset, Image, Sample};

/// Class names of Fashion-MNIST, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// IDX file names of a split: `(images, labels)`, without the optional `.gz`.
pub fn idx_files(train: bool) -> (&'static str, &'static str) {
    if train {
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    } else {
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    }
}

/// An image+label pair of IDX files, decoded into memory at open time.
#[derive(Debug)]
pub struct IdxDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    class_names: Vec<String>,
}

impl IdxDataset {
    /// Opens the MNIST (`fashion == false`) or Fashion-MNIST split from `dir` (the folder with
    /// the IDX files, or its `mnist/`, `fashion-mnist/` or torchvision `*/raw` sub-folder).
    pub fn open_mnist(dir: &Path, train: bool, fashion: bool) -> Result<Self> {
        let (img, lab) = idx_files(train);
        let subdirs: &[&str] = if fashion { &["fashion-mnist", "FashionMNIST/raw"] } else { &["mnist", "MNIST/raw"] };
        let gz = format!("{img}.gz");
        let Some(root) = find_dir(dir, subdirs, &[img, gz.as_str()]) else {
            bail!(
                "{}: no {} files found (looked for {img}[.gz] here and in {})",
                dir.display(),
                if fashion { "Fashion-MNIST" } else { "MNIST" },
                subdirs.join(", ")
            );
        };
        let names: Vec<String> = if fashion {
            FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            (0..10).map(|i| i.to_string()).collect()
        };
        Self::open(&with_gz(&root, img), &with_gz(&root, lab), names)
    }

    /// Opens an images file (ndim 3) and a labels file (ndim 1); labels must be below
    /// `class_names.len()`.
    pub fn open(images_path: &Path, labels_path: &Path, class_names: Vec<String>) -> Result<Self> {
        let (idims, images) = read_idx(images_path, 3)?;
        let (ldims, labels) = read_idx(labels_path, 1)?;
        if idims[0] != ldims[0] {
            bail!(
                "{}: label count mismatch, {} labels for {} images in {}",
                labels_path.display(),
                ldims[0],
                idims[0],
                images_path.display()
            );
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= class_names.len()) {
            bail!("{}: label {i} is {l}, out of range 0..{}", labels_path.display(), class_names.len());
        }
        Ok(Self { images, labels, rows: idims[1], cols: idims[2], class_names })
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

/// `dir/name` if it exists, else `dir/name.gz`.
fn with_gz(dir: &Path, name: &str) -> PathBuf {
    let plain = dir.join(name);
    if plain.is_file() {
        plain
    } else {
        dir.join(format!("{name}.gz"))
    }
}

/// Reads an unsigned-byte IDX file with `ndim` dimensions; returns the sizes and the data.
pub fn read_idx(path: &Path, ndim: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    let gz = path.extension().is_some_and(|e| e == "gz");
    let read = if gz {
        GzDecoder::new(file).read_to_end(&mut bytes)
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes)
    };
    read.with_context(|| {
        format!("{}: cannot read{}", path.display(), if gz { " (corrupt or truncated gzip?)" } else { "" })
    })?;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        bail!("{}: wrong size, {} bytes is shorter than the IDX header", path.display(), bytes.len());
    }
    if bytes[..4] != [0, 0, 0x08, ndim as u8] {
        bail!(
            "{}: bad magic {:02x?}, expected [00, 00, 08, {ndim:02x}] (unsigned-byte IDX with {ndim} dims)",
            path.display(),
            &bytes[..4]
        );
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let expected = dims.iter().product::<usize>();
    if bytes.len() - header != expected {
        bail!(
            "{}: wrong size, header says {dims:?} = {expected} bytes of data, file has {}",
            path.display(),
            bytes.len() - header
        );
    }
    bytes.drain(..header);
    Ok((dims, bytes))
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.len() {
            bail!("IDX index {index} out of range (len {})", self.len());
        }
        let n = self.rows * self.cols;
        let data = self.images[index * n..(index + 1) * n].to_vec();
        Ok(Sample {
            image: Image { width: self.cols, height: self.rows, channels: 1, data },
            label: Some(self.labels[index] as usize),
        })
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.class_names.len())
    }

    fn channels(&self) -> usize {
        1
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }
}
