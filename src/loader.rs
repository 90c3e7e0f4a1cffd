//! Data loading for BYOL pretraining (§3.3, App. B): seeded per-epoch shuffling, batches of
//! two augmented views (T, T′) produced on background threads into a bounded prefetch queue,
//! exact resume at any (epoch, batch); plus a non-augmenting loader for feature extraction.

use crate::augment::pipeline::mix_seed;
use crate::augment::{AugmentConfig, Augmenter};
use crate::image::Dataset;
use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Loader settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Drop the last incomplete batch of an epoch (pair loader only).
    pub drop_last: bool,
    /// Shuffle with a permutation derived from (seed, epoch) (pair loader only).
    pub shuffle: bool,
    /// Seed of the shuffling and of every augmentation.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (queue bound, at least 1).
    pub prefetch: usize,
    /// Worker threads; 0 = rayon's default (number of CPUs).
    pub threads: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self { batch_size: 256, drop_last: true, shuffle: true, seed: 0, prefetch: 2, threads: 0 }
    }
}

/// A batch of augmented pairs: `view1` = T(x), `view2` = T′(x), both NCHW with `shape`.
#[derive(Clone, Debug, PartialEq)]
pub struct PairBatch {
    pub epoch: u64,
    /// Index of this batch within its epoch.
    pub batch: usize,
    /// `[N, C, H, W]` of each view.
    pub shape: [usize; 4],
    pub view1: Vec<f32>,
    pub view2: Vec<f32>,
    /// Data set indices of the samples, in batch order.
    pub indices: Vec<usize>,
    pub labels: Vec<Option<usize>>,
}

/// A batch of evaluation images (short-side resize, center crop, normalize), NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalBatch {
    pub batch: usize,
    pub shape: [usize; 4],
    pub images: Vec<f32>,
    pub indices: Vec<usize>,
    pub labels: Vec<Option<usize>>,
}

/// Batches computed on a background thread; yields `Err` for a failed batch and then stops.
/// Dropping it stops the producer after the batch in progress.
pub struct BatchIter<T> {
    rx: Option<Receiver<Result<T>>>,
    handle: Option<JoinHandle<()>>,
}

impl<T> Iterator for BatchIter<T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl<T> Drop for BatchIter<T> {
    fn drop(&mut self) {
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn spawn_batches<J, T: Send + 'static>(
    jobs: impl Iterator<Item = J> + Send + 'static,
    prefetch: usize,
    mut make: impl FnMut(J) -> Result<T> + Send + 'static,
) -> Result<BatchIter<T>> {
    let (tx, rx) = sync_channel(prefetch.max(1));
    let handle = std::thread::Builder::new()
        .name("byol-loader".into())
        .spawn(move || {
            for job in jobs {
                let r = make(job);
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    break;
                }
            }
        })
        .context("spawning the data loader thread")?;
    Ok(BatchIter { rx: Some(rx), handle: Some(handle) })
}

struct Inner {
    dataset: Arc<dyn Dataset>,
    augmenter: Augmenter,
    cfg: LoaderConfig,
    pool: rayon::ThreadPool,
    /// Data-parallel shard (rank, replicas): this loader yields rank's contiguous slice of each
    /// global batch of `cfg.batch_size`; (0, 1) = the whole batch.
    shard: (usize, usize),
}

fn build_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("byol-aug-{i}"))
        .build()
        .context("building the augmentation thread pool")
}

fn check(dataset: &dyn Dataset, aug: &AugmentConfig, cfg: &LoaderConfig) -> Result<()> {
    ensure!(cfg.batch_size > 0, "batch_size must be > 0");
    ensure!(
        dataset.channels() == aug.channels(),
        "the data set has {}-channel images but the augmentation config normalizes {} channels",
        dataset.channels(),
        aug.channels()
    );
    Ok(())
}

/// Loader of BYOL training pairs. Cheap to clone (shared state).
#[derive(Clone)]
pub struct PairLoader {
    inner: Arc<Inner>,
}

impl PairLoader {
    /// Validates the configuration against the data set (channels, batch size).
    pub fn new(dataset: Arc<dyn Dataset>, augment: AugmentConfig, cfg: LoaderConfig) -> Result<Self> {
        Self::new_sharded(dataset, augment, cfg, 0, 1)
    }

    /// A loader for replica `rank` of `replicas` in data-parallel training: every replica walks
    /// the same seeded order of global batches of `cfg.batch_size` and takes its contiguous
    /// `batch_size / replicas` slice, so R replicas together see exactly the images (and
    /// augmentations) of one process. Errors if the batch does not split evenly.
    pub fn new_sharded(
        dataset: Arc<dyn Dataset>,
        augment: AugmentConfig,
        cfg: LoaderConfig,
        rank: usize,
        replicas: usize,
    ) -> Result<Self> {
        check(dataset.as_ref(), &augment, &cfg)?;
        crate::distributed::shard_range(cfg.batch_size, rank, replicas)?;
        ensure!(
            !cfg.drop_last || dataset.len() >= cfg.batch_size,
            "the data set has {} samples, fewer than one batch of {} (drop_last)",
            dataset.len(),
            cfg.batch_size
        );
        let augmenter = Augmenter::new(augment, cfg.seed)?;
        let pool = build_pool(cfg.threads)?;
        Ok(Self { inner: Arc::new(Inner { dataset, augmenter, cfg, pool, shard: (rank, replicas) }) })
    }

    pub fn augmenter(&self) -> &Augmenter {
        &self.inner.augmenter
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }

    /// Batches in one epoch (after drop-last).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.inner.dataset.len(), self.inner.cfg.batch_size);
        if self.inner.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch`: a permutation derived from (seed, epoch) only.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        epoch_order(self.inner.dataset.len(), self.inner.cfg.shuffle, self.inner.cfg.seed, epoch)
    }

    /// Builds batch `batch` of `epoch` synchronously (on the loader's thread pool).
    pub fn batch(&self, epoch: u64, batch: usize) -> Result<PairBatch> {
        let order = self.epoch_order(epoch);
        self.inner.pair_batch(&order, epoch, batch)
    }

    /// Iterates the batches `start_batch..` of `epoch`, prepared in the background
    /// (`prefetch` batches ahead). Resuming at (epoch, k) yields exactly the batches an
    /// uninterrupted run yields from its k-th batch of that epoch.
    pub fn epoch(&self, epoch: u64, start_batch: usize) -> Result<BatchIter<PairBatch>> {
        let n = self.batches_per_epoch();
        ensure!(start_batch <= n, "start batch {start_batch} is past the {n} batches of an epoch");
        let inner = Arc::clone(&self.inner);
        let order = self.epoch_order(epoch);
        spawn_batches(start_batch..n, inner.cfg.prefetch, move |b| inner.pair_batch(&order, epoch, b))
    }

    /// Iterates batches without end from batch `start_batch` of `epoch` on, through the
    /// following epochs (prefetch continues across epoch boundaries); stop by dropping it.
    /// Yields the same batches as `epoch(epoch, start_batch)`, `epoch(epoch + 1, 0)`, ….
    pub fn stream(&self, epoch: u64, start_batch: usize) -> Result<BatchIter<PairBatch>> {
        let n = self.batches_per_epoch();
        ensure!(start_batch <= n, "start batch {start_batch} is past the {n} batches of an epoch");
        ensure!(n > 0, "an epoch has no batches");
        let jobs = (epoch..).flat_map(move |e| {
            let first = if e == epoch { start_batch } else { 0 };
            (first..n).map(move |b| (e, b))
        });
        let inner = Arc::clone(&self.inner);
        let mut cached: Option<(u64, Vec<usize>)> = None;
        spawn_batches(jobs, inner.cfg.prefetch, move |(e, b)| {
            if cached.as_ref().map(|c| c.0) != Some(e) {
                let order = epoch_order(inner.dataset.len(), inner.cfg.shuffle, inner.cfg.seed, e);
                cached = Some((e, order));
            }
            let order = cached.as_ref().map(|c| c.1.as_slice()).unwrap_or(&[]);
            inner.pair_batch(order, e, b)
        })
    }
}

fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(0x5EED_0000_0001, &[seed, epoch]));
        order.shuffle(&mut rng);
    }
    order
}

impl Inner {
    fn pair_batch(&self, order: &[usize], epoch: u64, batch: usize) -> Result<PairBatch> {
        let bs = self.cfg.batch_size;
        let global = &order[(batch * bs).min(order.len())..((batch + 1) * bs).min(order.len())];
        let (rank, replicas) = self.shard;
        let indices = if replicas > 1 {
            let (a, b) = crate::distributed::shard_range(global.len(), rank, replicas)?;
            global[a..b].to_vec()
        } else {
            global.to_vec()
        };
        let [c, h, w] = self.augmenter.view_shape();
        let per = c * h * w;
        let (mut view1, mut view2) = (vec![0.0f32; indices.len() * per], vec![0.0f32; indices.len() * per]);
        let labels = self.pool.install(|| {
            view1
                .par_chunks_mut(per)
                .zip(view2.par_chunks_mut(per))
                .zip(indices.par_iter())
                .map(|((a, b), &i)| {
                    let s = self.dataset.get(i).with_context(|| format!("loading sample {i}"))?;
                    let aug = &self.augmenter;
                    aug.augment_view_into(&s.image, epoch, i as u64, 0, a)
                        .and_then(|_| aug.augment_view_into(&s.image, epoch, i as u64, 1, b))
                        .with_context(|| format!("augmenting sample {i}"))?;
                    Ok(s.label)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(PairBatch { epoch, batch, shape: [indices.len(), c, h, w], view1, view2, indices, labels })
    }

    fn eval_batch(&self, batch: usize) -> Result<EvalBatch> {
        let (bs, n) = (self.cfg.batch_size, self.dataset.len());
        let indices: Vec<usize> = (batch * bs..((batch + 1) * bs).min(n)).collect();
        let [c, h, w] = self.augmenter.eval_shape();
        let per = c * h * w;
        let mut images = vec![0.0f32; indices.len() * per];
        let labels = self.pool.install(|| {
            images
                .par_chunks_mut(per)
                .zip(indices.par_iter())
                .map(|(out, &i)| {
                    let s = self.dataset.get(i).with_context(|| format!("loading sample {i}"))?;
                    self.augmenter.eval_into(&s.image, out).with_context(|| format!("transforming sample {i}"))?;
                    Ok(s.label)
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(EvalBatch { batch, shape: [indices.len(), c, h, w], images, indices, labels })
    }
}

/// Non-augmenting loader (evaluation transform, data set order, last batch kept) for
/// feature extraction (linear / kNN evaluation, App. C). `shuffle` and `drop_last` are ignored.
#[derive(Clone)]
pub struct EvalLoader {
    inner: Arc<Inner>,
}

impl EvalLoader {
    pub fn new(dataset: Arc<dyn Dataset>, augment: AugmentConfig, cfg: LoaderConfig) -> Result<Self> {
        check(dataset.as_ref(), &augment, &cfg)?;
        let augmenter = Augmenter::new(augment, cfg.seed)?;
        let pool = build_pool(cfg.threads)?;
        Ok(Self { inner: Arc::new(Inner { dataset, augmenter, cfg, pool, shard: (0, 1) }) })
    }

    /// Number of batches (the last one may be smaller).
    pub fn num_batches(&self) -> usize {
        self.inner.dataset.len().div_ceil(self.inner.cfg.batch_size)
    }

    /// Iterates all batches from `start_batch`, prepared in the background.
    pub fn iter_from(&self, start_batch: usize) -> Result<BatchIter<EvalBatch>> {
        let n = self.num_batches();
        ensure!(start_batch <= n, "start batch {start_batch} is past the {n} batches");
        let inner = Arc::clone(&self.inner);
        spawn_batches(start_batch..n, inner.cfg.prefetch, move |b| inner.eval_batch(b))
    }
}
