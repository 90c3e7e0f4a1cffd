//! Several devices in one process (`byol pretrain --devices`): one replica per device, each on
//! its own thread, tied together by an in-process collective ([`ThreadGroup`]).
//!
//! Paper §3.3 / App. J: the global batch is split over devices and BatchNorm statistics are
//! aggregated across them. Every replica runs the ordinary data-parallel training loop
//! ([`crate::pretrain::pretrain`]) as rank `r` of `n`, exactly as an `mpirun` rank would: it sees
//! its own collective and device through [`crate::distributed::global`] and
//! [`crate::distributed::local_rank`], which answer per thread. Sums are taken over host copies
//! in rank order, so a run is deterministic and equals the same run under `mpirun -n n`.
//!
//! Why not burn's `all_reduce`: in burn 0.22.1 only the CUDA runtime (NCCL) implements it; the
//! wgpu/Vulkan runtime answers "no device transport" and the CPU backend has none, so the
//! reduction is staged through host memory here, as the MPI path does.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Result};

use crate::distributed::{say, Collective};

/// Unwinding payload of a replica stopped because another replica failed (not itself an error).
struct StoppedByPeer;

/// Shared state of the replicas of one process.
pub struct ThreadGroup {
    size: usize,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Contributions of the current all-reduce, by rank.
    slots: Vec<Option<Vec<f32>>>,
    arrived: usize,
    /// Completed all-reduces; waiters leave when it moves on.
    generation: u64,
    /// Result of the latest completed all-reduce.
    result: Vec<f32>,
    /// First replica that failed: every other replica stops at its next collective.
    failed: Option<usize>,
}

impl ThreadGroup {
    /// A group of `size` replicas.
    pub fn new(size: usize) -> Arc<Self> {
        let state = State { slots: vec![None; size], ..State::default() };
        Arc::new(Self { size, state: Mutex::new(state), wake: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `rank` as failed (the first failure is kept) and wakes every waiting replica.
    fn fail(&self, rank: usize) {
        let mut s = self.lock();
        s.failed.get_or_insert(rank);
        drop(s);
        self.wake.notify_all();
    }

    /// The replica that failed first, if any.
    fn first_failure(&self) -> Option<usize> {
        self.lock().failed
    }

    fn all_reduce(&self, rank: usize, buf: &mut [f32]) {
        let mut s = self.lock();
        if s.failed.is_some() {
            drop(s);
            resume_unwind(Box::new(StoppedByPeer));
        }
        s.slots[rank] = Some(buf.to_vec());
        s.arrived += 1;
        if s.arrived == self.size {
            // Rank order, whatever the arrival order: the same sums on every run.
            let parts: Vec<Vec<f32>> = s.slots.iter_mut().map(|p| p.take().unwrap_or_default()).collect();
            if parts.iter().any(|p| p.len() != buf.len()) {
                let lens: Vec<usize> = parts.iter().map(Vec::len).collect();
                drop(s);
                self.fail(rank);
                panic!("replicas reduced buffers of different lengths {lens:?} (they run different models)");
            }
            let mut sum = parts[0].clone();
            for p in &parts[1..] {
                sum.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
            s.result = sum;
            s.arrived = 0;
            s.generation += 1;
            self.wake.notify_all();
        } else {
            let generation = s.generation;
            s = self
                .wake
                .wait_while(s, |s| s.generation == generation && s.failed.is_none())
                .unwrap_or_else(|p| p.into_inner());
            if s.generation == generation {
                drop(s);
                resume_unwind(Box::new(StoppedByPeer));
            }
        }
        // The next all-reduce cannot complete before this rank joins it: `result` is still ours.
        buf.copy_from_slice(&s.result);
    }
}

/// One replica's handle on its group: the [`Collective`] its thread sees.
struct Member {
    group: Arc<ThreadGroup>,
    rank: usize,
}

impl Collective for Member {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.group.size
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) {
        self.group.all_reduce(self.rank, buf);
    }
    fn barrier(&self) {
        self.group.all_reduce(self.rank, &mut []);
    }
    fn abort(&self, _code: i32) -> ! {
        self.group.fail(self.rank);
        resume_unwind(Box::new(StoppedByPeer))
    }
    fn transport(&self) -> &'static str {
        "threads"
    }
}

/// Parses `--devices`: a count (`"2"`: devices 0 and 1) or a comma-separated list of device
/// indices (`"0,2"`), as PyTorch Lightning's `devices`. Empty: `None` (one device, no replicas).
pub fn parse_devices(spec: &str) -> Result<Option<Vec<usize>>> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    let bad = || {
        anyhow!("run.devices / --devices {spec:?}: expected a number of devices (\"2\") or a list of device indices (\"0,1\")")
    };
    let items: Vec<usize> =
        spec.split(',').map(|s| s.trim().parse::<usize>().map_err(|_| bad())).collect::<Result<_>>()?;
    let list = match items.as_slice() {
        [0] if !spec.contains(',') => {
            bail!("run.devices / --devices {spec:?}: the number of devices must be at least 1")
        }
        [n] if !spec.contains(',') => (0..*n).collect(),
        _ => items,
    };
    let mut sorted = list.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != list.len() {
        bail!("run.devices / --devices {spec:?}: a device is listed twice");
    }
    Ok(Some(list))
}

/// Runs `replica` once per device, on its own thread, as rank `r` of `devices.len()` with device
/// index `devices[r]`. Returns rank 0's result; if a replica fails (error or panic), the others
/// stop at their next collective and the first failure is returned, naming its replica.
pub fn run<T: Send>(devices: &[usize], replica: impl Fn() -> Result<T> + Sync) -> Result<T> {
    let n = devices.len();
    let group = ThreadGroup::new(n);
    say(&format!("data-parallel: {n} replicas in this process (threads), device indices {devices:?}"));
    let outcomes: Vec<Result<T>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(rank, &device)| {
                let (mine, replica) = (group.clone(), &replica);
                let spawned = std::thread::Builder::new()
                    .name(format!("replica-{rank}"))
                    .stack_size(64 << 20)
                    .spawn_scoped(scope, move || {
                        // Leaked once per replica and run: `global()` hands out `&'static`.
                        let member: &'static Member = Box::leak(Box::new(Member { group: mine.clone(), rank }));
                        crate::distributed::enter_replica(member, device);
                        let result = catch_unwind(AssertUnwindSafe(replica));
                        let failed = !matches!(result, Ok(Ok(_))) && !is_stop(&result);
                        if failed {
                            mine.fail(rank);
                        }
                        result
                    });
                if spawned.is_err() {
                    group.fail(rank); // the replicas already started must not wait for this one
                }
                spawned
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| match h.map_err(|e| anyhow!("cannot start replica {rank}: {e}"))?.join() {
                Ok(Ok(r)) => r,
                Ok(Err(p)) | Err(p) => Err(panic_error(p)),
            })
            .collect()
    });
    let first = group.first_failure();
    let mut out = None;
    for (rank, o) in outcomes.into_iter().enumerate() {
        match o {
            Err(e) if Some(rank) == first => {
                return Err(
                    e.context(format!("replica {rank} of {n} (device {}) failed; all replicas stopped", devices[rank]))
                )
            }
            Ok(v) if rank == 0 => out = Some(v),
            _ => {}
        }
    }
    out.ok_or_else(|| anyhow!("replica 0 did not finish"))
}

fn is_stop<T>(r: &std::thread::Result<Result<T>>) -> bool {
    matches!(r, Err(p) if p.is::<StoppedByPeer>())
}

fn panic_error(p: Box<dyn Any + Send>) -> anyhow::Error {
    if p.is::<StoppedByPeer>() {
        return anyhow!("stopped because another replica failed");
    }
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into());
    anyhow!("panicked: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_parse_like_lightning() {
        assert_eq!(parse_devices("").unwrap(), None);
        assert_eq!(parse_devices("3").unwrap(), Some(vec![0, 1, 2]));
        assert_eq!(parse_devices(" 2, 0 ").unwrap(), Some(vec![2, 0]));
        assert!(parse_devices("1,").map_err(|e| e.to_string()).unwrap_err().contains("expected"));
        assert!(parse_devices("0").is_err());
        assert!(parse_devices("1,1").is_err());
    }

    #[test]
    fn the_group_sums_in_rank_order_and_stops_when_a_replica_fails() {
        let group = ThreadGroup::new(3);
        let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|rank| {
                    let g = group.clone();
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for round in 0..50 {
                            let mut buf = [rank as f32 + round as f32, 1.0];
                            g.all_reduce(rank, &mut buf);
                            out.extend(buf);
                        }
                        out
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want: Vec<f32> = (0..50).flat_map(|r| [3.0 * r as f32 + 3.0, 3.0]).collect();
        assert!(sums.iter().all(|s| *s == want));

        let group = ThreadGroup::new(2);
        let g = group.clone();
        let waiter = std::thread::spawn(move || catch_unwind(AssertUnwindSafe(|| g.all_reduce(0, &mut [1.0]))));
        std::thread::sleep(std::time::Duration::from_millis(50));
        group.fail(1);
        let r = waiter.join().unwrap();
        assert!(matches!(r, Err(p) if p.is::<StoppedByPeer>()), "the waiting replica did not stop");
        assert_eq!(group.first_failure(), Some(1));
    }
}
