//! Shared by the timing examples (`#[path]` module): the median of `runs` timed calls of `f`,
//! in milliseconds, after one untimed warm-up call.
use std::time::Instant;

pub fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
