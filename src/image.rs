//! Decoded images as they come out of a data set: 8-bit pixels, HWC layout.

/// One decoded image: `height × width × channels` bytes, row-major, channels interleaved (HWC).
/// `channels` is 1 (grayscale) or 3 (RGB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Image {
    /// Builds an image, checking that `data` has `width * height * channels` bytes.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            data.len() == width * height * channels,
            "image buffer has {} bytes, expected {width}x{height}x{channels}",
            data.len()
        );
        Ok(Self { width, height, channels, data })
    }
}

/// One sample of a data set: an image and, for labelled data, its class index.
#[derive(Clone, Debug)]
pub struct Sample {
    pub image: Image,
    pub label: Option<usize>,
}

/// A random-access data set of images. Implementations are cheap to share across threads.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// True when the data set has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index` (0 ≤ index < len). Errors name the file and what is wrong with it.
    fn get(&self, index: usize) -> anyhow::Result<Sample>;
    /// Number of classes for labelled data sets, `None` for unlabelled ones.
    fn num_classes(&self) -> Option<usize>;
    /// Channels of every image (1 or 3).
    fn channels(&self) -> usize;
    /// Class names when known (same order as the label indices).
    fn class_names(&self) -> Vec<String> {
        (0..self.num_classes().unwrap_or(0)).map(|i| i.to_string()).collect()
    }
}
