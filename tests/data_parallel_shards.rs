//! Data-parallel sharding without MPI: R replicas' loaders together yield exactly the images and
//! augmented views of one loader with the same global batch, and uneven splits are errors.

use std::sync::Arc;

use anyhow::Result;
use byol::augment::AugmentConfig;
use byol::distributed::shard_range;
use byol::image::{Dataset, Image, Sample};
use byol::loader::{LoaderConfig, PairLoader};

struct Toy(usize);

impl Dataset for Toy {
    fn len(&self) -> usize {
        self.0
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let (h, w) = (20 + i % 3, 24 - i % 4);
        let data = (0..h * w * 3).map(|k| ((k * 7 + i * 53) % 256) as u8).collect();
        Ok(Sample { image: Image::new(w, h, 3, data)?, label: Some(i % 2) })
    }
    fn num_classes(&self) -> Option<usize> {
        Some(2)
    }
    fn channels(&self) -> usize {
        3
    }
}

fn aug() -> AugmentConfig {
    let mut a = AugmentConfig::imagenet();
    a.view1.size = 12;
    a.view2.size = 12;
    a
}

fn cfg() -> LoaderConfig {
    LoaderConfig { batch_size: 8, drop_last: true, shuffle: true, seed: 5, prefetch: 2, threads: 1 }
}

#[test]
fn shards_of_all_replicas_concatenate_to_the_single_process_batch() {
    let ds: Arc<dyn Dataset> = Arc::new(Toy(37));
    let whole = PairLoader::new(ds.clone(), aug(), cfg()).unwrap();
    for replicas in [2, 4] {
        let shards: Vec<PairLoader> =
            (0..replicas).map(|r| PairLoader::new_sharded(ds.clone(), aug(), cfg(), r, replicas).unwrap()).collect();
        assert_eq!(shards[0].batches_per_epoch(), whole.batches_per_epoch());
        for epoch in [0, 3] {
            for batch in 0..whole.batches_per_epoch() {
                let w = whole.batch(epoch, batch).unwrap();
                let parts: Vec<_> = shards.iter().map(|s| s.batch(epoch, batch).unwrap()).collect();
                let cat = |f: &dyn Fn(&byol::loader::PairBatch) -> Vec<f32>| -> Vec<f32> {
                    parts.iter().flat_map(f).collect()
                };
                let idx: Vec<usize> = parts.iter().flat_map(|p| p.indices.clone()).collect();
                assert_eq!(idx, w.indices, "replicas {replicas}, epoch {epoch}, batch {batch}");
                assert!(parts.iter().all(|p| p.shape[0] == 8 / replicas));
                assert_eq!(cat(&|p| p.view1.clone()), w.view1);
                assert_eq!(cat(&|p| p.view2.clone()), w.view2);
            }
        }
    }
}

#[test]
fn uneven_splits_and_bad_ranks_are_errors() {
    let ds: Arc<dyn Dataset> = Arc::new(Toy(37));
    let e = PairLoader::new_sharded(ds.clone(), aug(), cfg(), 0, 3).err().expect("8 over 3 replicas");
    assert!(format!("{e:#}").contains("cannot be split evenly over 3 replicas"), "{e:#}");
    assert!(PairLoader::new_sharded(ds, aug(), cfg(), 2, 2).is_err());
    assert_eq!(shard_range(8, 1, 2).unwrap(), (4, 8));
    assert_eq!(shard_range(8, 3, 4).unwrap(), (6, 8));
}

#[test]
fn without_mpi_the_collective_is_a_single_process() {
    let c = byol::distributed::global();
    assert_eq!((c.rank(), c.size()), (0, 1));
    let mut v = [1.5f32, -2.0];
    c.all_reduce_sum(&mut v);
    assert_eq!(v, [1.5, -2.0]);
    assert!(byol::distributed::bn_group().is_none());
    assert!(byol::distributed::all_true(true) && !byol::distributed::all_true(false));
}
