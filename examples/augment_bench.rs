//! Throughput of the BYOL augmentation loader (two views per image), images/s.
//!
//! `cargo run --release --example augment_bench [-- RUNS]` — for the `cifar` preset on
//! 32×32 images and the `imagenet` preset on 256×256 images, with 1 and 2 worker threads,
//! prints the median of RUNS (default 5) epochs over an in-memory data set.

use anyhow::Result;
use byol::augment::preset;
use byol::image::{Dataset, Image, Sample};
use byol::loader::{LoaderConfig, PairLoader};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Instant;

/// In-memory images: smooth colour gradients plus noise (so every op does real work).
struct Synthetic {
    images: Vec<Image>,
}

impl Synthetic {
    fn new(n: usize, side: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let images = (0..n)
            .map(|_| {
                let (fx, fy, ph): (f32, f32, f32) = (rng.gen_range(0.01..0.2), rng.gen_range(0.01..0.2), rng.gen());
                let mut data = Vec::with_capacity(side * side * 3);
                for y in 0..side {
                    for x in 0..side {
                        for c in 0..3 {
                            let v = 127.0 + 100.0 * ((x as f32 * fx + y as f32 * fy + ph * 6.0 + c as f32).sin());
                            data.push((v + rng.gen_range(-20.0..20.0)).clamp(0.0, 255.0) as u8);
                        }
                    }
                }
                Image { width: side, height: side, channels: 3, data }
            })
            .collect();
        Self { images }
    }
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn get(&self, index: usize) -> Result<Sample> {
        Ok(Sample { image: self.images[index].clone(), label: Some(0) })
    }
    fn num_classes(&self) -> Option<usize> {
        Some(1)
    }
    fn channels(&self) -> usize {
        3
    }
}

fn main() -> Result<()> {
    let runs: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    println!("| preset | input | output | threads | batch | images/s (median of {runs}) |");
    println!("|---|---|---|---|---|---|");
    for (name, side, n, batch) in [("cifar", 32, 4096, 256), ("imagenet", 256, 256, 64)] {
        let ds: Arc<dyn Dataset> = Arc::new(Synthetic::new(n, side));
        let aug = preset(name)?;
        let out = aug.view1.size;
        for threads in [1, 2] {
            let cfg = LoaderConfig { batch_size: batch, threads, prefetch: 2, ..LoaderConfig::default() };
            let loader = PairLoader::new(ds.clone(), aug.clone(), cfg)?;
            let mut rates = Vec::new();
            for epoch in 0..runs as u64 {
                let t = Instant::now();
                let mut count = 0;
                for b in loader.epoch(epoch, 0)? {
                    count += b?.shape[0];
                }
                rates.push(count as f64 / t.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            let median = rates[rates.len() / 2];
            println!("| {name} | {side}x{side} | {out}x{out} | {threads} | {batch} | {median:.0} |");
        }
    }
    Ok(())
}
