//! CIFAR-10 and CIFAR-100, official *binary* versions (Krizhevsky 2009,
//! <https://www.cs.toronto.edu/~kriz/cifar.html>), the data sets of the paper's CIFAR transfer
//! experiments (BYOL §4.2, App. D) and of the small-scale CIFAR recipes (solo-learn, lightly).
//!
//! Layout: each record is the label byte(s) followed by 3072 pixel bytes: the 1024 red values of
//! the 32×32 image in row-major order, then the 1024 green, then the 1024 blue.
//! CIFAR-10: 1 label byte (0..10); files `data_batch_1.bin`..`data_batch_5.bin`, `test_batch.bin`,
//! class names in `batches.meta.txt`. CIFAR-100: a coarse (0..20) then a fine (0..100) label
//! byte; files `train.bin`, `test.bin`, names in `fine_label_names.txt`. We use the fine label.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::records::{find_dir, read_names, RecordFile};
use crate::image::{Dataset, Image, Sample};

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;

/// Which CIFAR variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    Cifar100,
}

impl CifarKind {
    /// Label bytes before the pixels of each record.
    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    /// Number of (fine) classes.
    pub fn num_classes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 10,
            CifarKind::Cifar100 => 100,
        }
    }

    /// Sub-folder created by the official tarball.
    pub fn archive_dir(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-batches-bin",
            CifarKind::Cifar100 => "cifar-100-binary",
        }
    }

    /// File names of the train or test split.
    pub fn split_files(self, train: bool) -> Vec<String> {
        match (self, train) {
            (CifarKind::Cifar10, true) => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            (CifarKind::Cifar10, false) => vec!["test_batch.bin".into()],
            (CifarKind::Cifar100, true) => vec!["train.bin".into()],
            (CifarKind::Cifar100, false) => vec!["test.bin".into()],
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "batches.meta.txt",
            CifarKind::Cifar100 => "fine_label_names.txt",
        }
    }
}

/// A CIFAR split: pixels are read lazily per sample, labels are held in memory.
#[derive(Debug)]
pub struct Cifar {
    kind: CifarKind,
    files: Vec<RecordFile>,
    /// Index of the first sample of each file, plus the total at the end.
    starts: Vec<usize>,
    labels: Vec<u8>,
    class_names: Option<Vec<String>>,
}

impl Cifar {
    /// Opens the train or test split from `dir`, which may be the folder holding the `.bin` files
    /// or its parent (where the official tarball was extracted).
    pub fn open(kind: CifarKind, dir: &Path, train: bool) -> Result<Self> {
        let names = kind.split_files(train);
        let probe: Vec<&str> = names.iter().map(String::as_str).collect();
        let Some(root) = find_dir(dir, &[kind.archive_dir()], &probe) else {
            bail!(
                "{}: no {} files found (looked for {} here and in {}/)",
                dir.display(),
                if kind == CifarKind::Cifar10 { "CIFAR-10" } else { "CIFAR-100" },
                names.join(", "),
                kind.archive_dir()
            );
        };
        let paths: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
        let class_names = read_names(&root.join(kind.names_file()), kind.num_classes())?;
        Self::from_files(kind, &paths, class_names)
    }

    /// Opens the given record files, in order, validating sizes and every label.
    pub fn from_files(kind: CifarKind, paths: &[PathBuf], class_names: Option<Vec<String>>) -> Result<Self> {
        let lb = kind.label_bytes();
        let record = lb + 3 * PLANE;
        let mut files = Vec::with_capacity(paths.len());
        let mut starts = vec![0];
        let mut labels = Vec::new();
        for path in paths {
            let file = RecordFile::open(path, record)?;
            let prefixes = file.record_prefixes(lb)?;
            for (i, l) in prefixes.chunks_exact(lb).enumerate() {
                if kind == CifarKind::Cifar100 && l[0] >= 20 {
                    bail!("{}: record {i}: coarse label {} out of range 0..20", path.display(), l[0]);
                }
                let fine = l[lb - 1];
                if fine as usize >= kind.num_classes() {
                    bail!("{}: record {i}: label {fine} out of range 0..{}", path.display(), kind.num_classes());
                }
                labels.push(fine);
            }
            starts.push(starts[starts.len() - 1] + file.count());
            files.push(file);
        }
        Ok(Self { kind, files, starts, labels, class_names })
    }

    /// Which variant this is.
    pub fn kind(&self) -> CifarKind {
        self.kind
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

impl Dataset for Cifar {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.len() {
            bail!("CIFAR index {index} out of range (len {})", self.len());
        }
        let f = self.starts.partition_point(|&s| s <= index) - 1;
        let lb = self.kind.label_bytes();
        let mut rec = vec![0u8; lb + 3 * PLANE];
        self.files[f].read(index - self.starts[f], &mut rec)?;
        let planes = &rec[lb..];
        let mut data = vec![0u8; 3 * PLANE];
        for (p, px) in data.chunks_exact_mut(3).enumerate() {
            px[0] = planes[p];
            px[1] = planes[PLANE + p];
            px[2] = planes[2 * PLANE + p];
        }
        Ok(Sample {
            image: Image { width: SIDE, height: SIDE, channels: 3, data },
            label: Some(self.labels[index] as usize),
        })
    }

    fn num_classes(&self) -> Option<usize> {
        Some(self.kind.num_classes())
    }

    fn channels(&self) -> usize {
        3
    }

    fn class_names(&self) -> Vec<String> {
        match &self.class_names {
            Some(n) => n.clone(),
            None => (0..self.kind.num_classes()).map(|i| i.to_string()).collect(),
        }
    }
}
