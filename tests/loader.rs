//! Loader behaviour: deterministic views per (seed, epoch, index, view) independent of thread
//! count and batch composition, seeded shuffling, drop-last, exact resume, error surfacing.

use anyhow::{bail, Result};
use byol::augment::{AugmentConfig, Augmenter};
use byol::image::{Dataset, Image, Sample};
use byol::loader::{EvalLoader, LoaderConfig, PairBatch, PairLoader};
use std::collections::HashMap;
use std::sync::Arc;

/// In-memory data set of patterned RGB images of varying size; `get(bad)` fails.
struct Toy {
    n: usize,
    channels: usize,
    bad: Option<usize>,
}

impl Dataset for Toy {
    fn len(&self) -> usize {
        self.n
    }
    fn get(&self, i: usize) -> Result<Sample> {
        if Some(i) == self.bad {
            bail!("toy.bin: record {i} is corrupt");
        }
        let (h, w, c) = (30 + i % 5, 40 - i % 7, self.channels);
        let data = (0..h * w * c).map(|k| ((k * 31 + i * 97 + (k / w) * 13) % 256) as u8).collect();
        Ok(Sample { image: Image::new(w, h, c, data)?, label: Some(i % 3) })
    }
    fn num_classes(&self) -> Option<usize> {
        Some(3)
    }
    fn channels(&self) -> usize {
        self.channels
    }
}

fn toy(n: usize) -> Arc<dyn Dataset> {
    Arc::new(Toy { n, channels: 3, bad: None })
}

fn cfg(batch_size: usize, threads: usize) -> LoaderConfig {
    LoaderConfig { batch_size, drop_last: true, shuffle: true, seed: 11, prefetch: 2, threads }
}

fn small_aug() -> AugmentConfig {
    let mut a = AugmentConfig::imagenet();
    for v in [&mut a.view1, &mut a.view2] {
        v.size = 16;
    }
    a.view2.solarize_p = 0.5; // exercise every op
    a
}

fn collect(loader: &PairLoader, epoch: u64, start: usize) -> Vec<PairBatch> {
    loader.epoch(epoch, start).unwrap().map(|b| b.unwrap()).collect()
}

/// sample index → (view1, view2) of one epoch.
fn views_by_index(batches: &[PairBatch]) -> HashMap<usize, (Vec<f32>, Vec<f32>)> {
    let mut m = HashMap::new();
    for b in batches {
        let per = b.shape[1] * b.shape[2] * b.shape[3];
        for (k, &i) in b.indices.iter().enumerate() {
            m.insert(i, (b.view1[k * per..(k + 1) * per].to_vec(), b.view2[k * per..(k + 1) * per].to_vec()));
        }
    }
    m
}

#[test]
fn views_do_not_depend_on_threads_or_batch_composition() {
    let one = PairLoader::new(toy(23), small_aug(), cfg(5, 1)).unwrap();
    let two = PairLoader::new(toy(23), small_aug(), cfg(5, 2)).unwrap();
    for epoch in [0, 1] {
        assert_eq!(collect(&one, epoch, 0), collect(&two, epoch, 0));
    }
    // Different batch sizes (and shuffling off) → different batch composition, same views.
    let a = views_by_index(&collect(&one, 1, 0));
    let other = LoaderConfig { shuffle: false, drop_last: false, ..cfg(7, 2) };
    let b = views_by_index(&collect(&PairLoader::new(toy(23), small_aug(), other).unwrap(), 1, 0));
    assert_eq!(a.len(), 20);
    for (i, v) in &a {
        assert_eq!(v, &b[i], "views of sample {i} differ between batchings");
        assert_ne!(v.0, v.1, "the two views of sample {i} are identical");
    }
    // Another epoch gives other views of the same sample.
    let e0 = views_by_index(&collect(&one, 0, 0));
    let common = a.keys().find(|i| e0.contains_key(i)).unwrap();
    assert_ne!(a[common].0, e0[common].0);
}

#[test]
fn shuffle_is_a_seeded_permutation_per_epoch_with_drop_last() {
    let loader = PairLoader::new(toy(23), small_aug(), cfg(5, 1)).unwrap();
    assert_eq!(loader.batches_per_epoch(), 4);
    let o0 = loader.epoch_order(0);
    let mut sorted = o0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..23).collect::<Vec<_>>());
    assert_ne!(o0, loader.epoch_order(1));
    assert_eq!(o0, PairLoader::new(toy(23), small_aug(), cfg(5, 2)).unwrap().epoch_order(0));
    let batches = collect(&loader, 0, 0);
    assert_eq!(batches.len(), 4);
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, o0[..20].to_vec());
    for b in &batches {
        assert_eq!(b.shape, [5, 3, 16, 16]);
        assert_eq!(b.view1.len(), 5 * 3 * 16 * 16);
        assert_eq!(b.labels, b.indices.iter().map(|i| Some(i % 3)).collect::<Vec<_>>());
    }
    let keep = PairLoader::new(toy(23), small_aug(), LoaderConfig { drop_last: false, ..cfg(5, 1) }).unwrap();
    let last = collect(&keep, 0, 0).pop().unwrap();
    assert_eq!(last.shape[0], 3);
}

#[test]
fn resume_at_epoch_and_batch_is_exact() {
    let loader = PairLoader::new(toy(23), small_aug(), cfg(4, 2)).unwrap();
    let full = collect(&loader, 3, 0);
    let resumed = collect(&loader, 3, 2);
    assert_eq!(&full[2..], &resumed[..]);
    assert_eq!(loader.batch(3, 4).unwrap(), full[4]);
    assert!(loader.epoch(3, 99).is_err());
    // The endless stream resumed mid-epoch continues into the next epochs unchanged.
    let next = collect(&loader, 4, 0);
    let streamed: Vec<PairBatch> = loader.stream(3, 2).unwrap().take(3 + next.len() + 1).map(|b| b.unwrap()).collect();
    assert_eq!(&streamed[..3], &full[2..]);
    assert_eq!(&streamed[3..3 + next.len()], &next[..]);
    assert_eq!((streamed.last().unwrap().epoch, streamed.last().unwrap().batch), (5, 0));
    // Dropping a half-consumed iterator stops its producer without hanging.
    let mut it = loader.epoch(3, 0).unwrap();
    it.next().unwrap().unwrap();
    drop(it);
}

#[test]
fn dataset_errors_surface_as_err() {
    let ds: Arc<dyn Dataset> = Arc::new(Toy { n: 12, channels: 3, bad: Some(7) });
    let loader = PairLoader::new(ds, small_aug(), LoaderConfig { shuffle: false, ..cfg(4, 2) }).unwrap();
    let results: Vec<_> = loader.epoch(0, 0).unwrap().collect();
    assert_eq!(results.len(), 2, "the iterator stops after the failed batch");
    assert!(results[0].is_ok());
    let err = format!("{:#}", results[1].as_ref().unwrap_err());
    assert!(err.contains("sample 7") && err.contains("toy.bin"), "{err}");
}

#[test]
fn channel_mismatch_is_an_error() {
    let gray: Arc<dyn Dataset> = Arc::new(Toy { n: 8, channels: 1, bad: None });
    let err = PairLoader::new(gray.clone(), small_aug(), cfg(4, 1)).err().unwrap();
    assert!(err.to_string().contains("1-channel"), "{err}");
    let mut g = AugmentConfig::grayscale();
    g.view1.size = 12;
    g.view2.size = 12;
    let loader = PairLoader::new(gray, g, cfg(4, 1)).unwrap();
    assert_eq!(collect(&loader, 0, 0)[0].shape, [4, 1, 12, 12]);
}

#[test]
fn eval_loader_is_ordered_and_matches_the_eval_transform() {
    let mut aug = small_aug();
    aug.eval.resize = 20;
    aug.eval.crop = 16;
    let loader = EvalLoader::new(toy(10), aug.clone(), cfg(4, 2)).unwrap();
    assert_eq!(loader.num_batches(), 3);
    let batches: Vec<_> = loader.iter_from(0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.shape[0]).collect::<Vec<_>>(), vec![4, 4, 2]);
    let augmenter = Augmenter::new(aug, 0).unwrap();
    let ds = toy(10);
    for b in &batches {
        let per = 3 * 16 * 16;
        for (k, &i) in b.indices.iter().enumerate() {
            let mut want = vec![0.0; per];
            augmenter.eval_into(&ds.get(i).unwrap().image, &mut want).unwrap();
            assert_eq!(&b.images[k * per..(k + 1) * per], &want[..]);
            assert_eq!(b.labels[k], Some(i % 3));
        }
    }
    assert_eq!(batches[2].indices, vec![8, 9]);
}
