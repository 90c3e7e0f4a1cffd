//! STL-10, binary version (Coates, Lee & Ng 2011, <https://cs.stanford.edu/~acoates/stl10/>),
//! one of the BYOL transfer/linear-evaluation benchmarks (BYOL App. D) and a common
//! self-supervised pretraining set thanks to its 100,000 unlabelled images.
//!
//! Layout of `*_X.bin`: 96×96×3 images of 27,648 bytes each, stored channel by channel, and
//! within a channel **column-major** (MATLAB order): byte `c·9216 + x·96 + y` is pixel (row y,
//! column x) of channel c. `*_y.bin` holds one label byte per image, 1-based (1..=10).
//! Files: `train_X.bin`/`train_y.bin` (5,000), `test_X.bin`/`test_y.bin` (8,000),
//! `unlabeled_X.bin` (100,000, 2.7 GB: read lazily, never loaded), `class_names.txt`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::records::{find_dir, read_names, RecordFile};
use super::Split;
use crate::image::{Dataset, Image, Sample};

const SIDE: usize = 96;
const PLANE: usize = SIDE * SIDE;
const RECORD: usize = 3 * PLANE;
const CLASSES: usize = 10;

/// Sub-folder created by the official tarball.
pub const STL10_ARCHIVE_DIR: &str = "stl10_binary";

#[derive(Debug)]
struct Part {
    images: RecordFile,
    /// 0-based labels, `None` for the unlabelled part.
    labels: Option<Vec<u8>>,
}

/// An STL-10 split (`train`, `test`, `unlabeled` or `train+unlabeled`, in that order).
#[derive(Debug)]
pub struct Stl10 {
    parts: Vec<Part>,
    starts: Vec<usize>,
    class_names: Option<Vec<String>>,
}

impl Stl10 {
    /// Opens a split from `dir` (the folder holding the `.bin` files, or its parent).
    pub fn open(dir: &Path, split: Split) -> Result<Self> {
        let stems: &[&str] = match split {
            Split::Train => &["train"],
            Split::Test => &["test"],
            Split::Unlabeled => &["unlabeled"],
            Split::TrainUnlabeled => &["train", "unlabeled"],
        };
        let probe = format!("{}_X.bin", stems[0]);
        let Some(root) = find_dir(dir, &[STL10_ARCHIVE_DIR], &[probe.as_str()]) else {
            bail!("{}: no STL-10 files found (looked for {probe} here and in {STL10_ARCHIVE_DIR}/)", dir.display());
        };
        let mut parts = Vec::new();
        let mut starts = vec![0];
        for stem in stems {
            let images = RecordFile::open(&root.join(format!("{stem}_X.bin")), RECORD)?;
            let labels = if *stem == "unlabeled" {
                None
            } else {
                Some(read_labels(&root.join(format!("{stem}_y.bin")), images.count())?)
            };
            starts.push(starts[starts.len() - 1] + images.count());
            parts.push(Part { images, labels });
        }
        let class_names = read_names(&root.join("class_names.txt"), CLASSES)?;
        Ok(Self { parts, starts, class_names })
    }
}

/// Reads a 1-based label file and returns 0-based labels, checking count and range.
fn read_labels(path: &Path, count: usize) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.len() != count {
        bail!("{}: label count mismatch, {} labels for {count} images", path.display(), raw.len());
    }
    raw.iter()
        .enumerate()
        .map(|(i, &l)| {
            if (1..=CLASSES as u8).contains(&l) {
                Ok(l - 1)
            } else {
                bail!("{}: label {i} is {l}, out of range 1..=10", path.display())
            }
        })
        .collect()
}

impl Dataset for Stl10 {
    fn len(&self) -> usize {
        self.starts[self.starts.len() - 1]
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.len() {
            bail!("STL-10 index {index} out of range (len {})", self.len());
        }
        let p = self.starts.partition_point(|&s| s <= index) - 1;
        let part = &self.parts[p];
        let local = index - self.starts[p];
        let mut rec = vec![0u8; RECORD];
        part.images.read(local, &mut rec)?;
        // Column-major planes -> row-major interleaved HWC.
        let mut data = vec![0u8; RECORD];
        for c in 0..3 {
            let plane = &rec[c * PLANE..(c + 1) * PLANE];
            for x in 0..SIDE {
                let column = &plane[x * SIDE..(x + 1) * SIDE];
                for (y, &v) in column.iter().enumerate() {
                    data[(y * SIDE + x) * 3 + c] = v;
                }
            }
        }
        Ok(Sample {
            image: Image { width: SIDE, height: SIDE, channels: 3, data },
            label: part.labels.as_ref().map(|l| l[local] as usize),
        })
    }

    fn num_classes(&self) -> Option<usize> {
        self.parts.iter().any(|p| p.labels.is_some()).then_some(CLASSES)
    }

    fn channels(&self) -> usize {
        3
    }

    fn class_names(&self) -> Vec<String> {
        if self.num_classes().is_none() {
            return Vec::new();
        }
        match &self.class_names {
            Some(n) => n.clone(),
            None => (0..CLASSES).map(|i| i.to_string()).collect(),
        }
    }
}
