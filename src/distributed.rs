//! Data-parallel training: the collective that ties replicas together (rank, size, all-reduce,
//! barrier, abort), reachable process-wide so deep code (cross-replica BatchNorm) can use it.
//!
//! Paper §3.3 / App. J train with a global batch of 4096 split over 512 TPU cores, with the
//! BatchNorm statistics aggregated over all of them. Here a replica is one process (one device);
//! the processes are launched by `mpirun` and talk over MPI (cargo feature `mpi`); or a replica
//! is one thread of this process with a device of its own (`--devices`, [`crate::replicas`]).
//! Without either, the collective is the single-process one, whose operations are no-ops, and
//! training is exactly the single-process code path.
//!
//! Every rank runs the same program on its shard of each global batch: gradients are summed over
//! ranks and divided by the number of ranks ([`average_gradients`]), so every rank applies the
//! gradient of the global mean loss and the replicas stay bit-identical.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, ensure, Result};
use burn::tensor::{Tensor, TensorData};

use crate::grads::GradMap;

/// The operations data-parallel training needs from the communication layer. Implementations
/// are blocking; every rank must call them in the same order with buffers of the same length.
/// A communication failure is fatal (MPI aborts the job), so the calls do not return errors.
pub trait Collective: Send + Sync {
    /// This replica's index, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of replicas.
    fn size(&self) -> usize;
    /// Replaces every element of `buf` by its sum over all replicas.
    fn all_reduce_sum(&self, buf: &mut [f32]);
    /// Waits until every replica has reached it.
    fn barrier(&self);
    /// Stops every replica of the job with exit code `code` (does not return).
    fn abort(&self, code: i32) -> !;
    /// Name of the transport, for messages ("single", "mpi").
    fn transport(&self) -> &'static str;
}

/// One process, no communication: all-reduce is the identity.
#[derive(Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) {}
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn transport(&self) -> &'static str {
        "single"
    }
}

static GLOBAL: OnceLock<Box<dyn Collective>> = OnceLock::new();
static SINGLE: Single = Single;
static SYNC_BN: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// A replica thread's own collective and device index ([`crate::replicas`]).
    static REPLICA: Cell<Option<(&'static dyn Collective, usize)>> = const { Cell::new(None) };
}

/// Makes this thread a replica: [`global`] returns `c` and [`local_rank`] `device` on it.
pub fn enter_replica(c: &'static dyn Collective, device: usize) {
    REPLICA.with(|r| r.set(Some((c, device))));
}

/// The collective of this replica: the replica thread's own ([`enter_replica`]), else the
/// process-wide one that was installed, else [`Single`].
pub fn global() -> &'static dyn Collective {
    if let Some((c, _)) = REPLICA.with(Cell::get) {
        return c;
    }
    match GLOBAL.get() {
        Some(c) => c.as_ref(),
        None => &SINGLE,
    }
}

/// Installs the process-wide collective (once per process).
pub fn install(c: Box<dyn Collective>) -> Result<&'static dyn Collective> {
    let (rank, size) = (c.rank(), c.size());
    ensure!(GLOBAL.set(c).is_ok(), "a collective was already installed in this process");
    say(&format!("data-parallel: rank {rank} of {size} ({})", global().transport()));
    Ok(global())
}

/// True on rank 0: the replica that writes checkpoints, metrics and plots and runs evaluations.
pub fn is_root() -> bool {
    global().rank() == 0
}

/// Chooses per-replica (`false`) or cross-replica (`true`, default) BatchNorm statistics.
pub fn set_sync_bn(on: bool) {
    SYNC_BN.store(on, Ordering::SeqCst);
}

/// The collective BatchNorm layers in training mode must aggregate their statistics over:
/// `Some` when several replicas run and cross-replica BatchNorm is on.
pub fn bn_group() -> Option<&'static dyn Collective> {
    let c = global();
    (c.size() > 1 && SYNC_BN.load(Ordering::SeqCst)).then_some(c)
}

/// Number of processes `mpirun` (Open MPI or MPICH/Hydra) says this job has, if started by it.
pub fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok().and_then(|s| s.trim().parse().ok()))
}

/// The index of the device this replica uses, when several replicas run: the replica thread's
/// device, or the rank's index among the ranks on its machine (one GPU per rank).
pub fn local_rank() -> Option<usize> {
    if let Some((c, device)) = REPLICA.with(Cell::get) {
        return (c.size() > 1).then_some(device);
    }
    if global().size() == 1 {
        return None;
    }
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK", "SLURM_LOCALID"]
        .iter()
        .find_map(|v| std::env::var(v).ok().and_then(|s| s.trim().parse().ok()))
}

/// Sets up the process-wide collective for this process: MPI when started by `mpirun` (and built
/// with the `mpi` feature), single-process otherwise. Call once, early in `main`; a multi-rank
/// launch of a binary without MPI support is an error (every rank would train alone and
/// overwrite the others' files). Returns the guard that shuts MPI down when dropped.
pub fn init_from_env() -> Result<Session> {
    match launcher_world_size() {
        Some(n) if n > 1 => init_mpi(),
        _ => Ok(Session { active: false }),
    }
}

#[cfg(feature = "mpi")]
fn init_mpi() -> Result<Session> {
    let c = mpi_impl::MpiCollective::init()?;
    install(Box::new(c))?;
    install_panic_hook();
    Ok(Session { active: true })
}

#[cfg(not(feature = "mpi"))]
fn init_mpi() -> Result<Session> {
    bail!(
        "this process was started by mpirun with {} processes, but byol was built without MPI support: rebuild with `cargo build --release --features mpi` (needs libopenmpi-dev and libclang-dev)",
        launcher_world_size().unwrap_or(0)
    )
}

/// Keeps the multi-process job alive; dropping it waits for every rank and shuts MPI down.
#[must_use = "dropping the session ends MPI"]
pub struct Session {
    active: bool,
}

impl Session {
    /// Reports a fatal error of this rank and stops the whole job (other ranks would otherwise
    /// wait forever in their next collective). Single-process: returns the error unchanged.
    pub fn fail(&self, e: anyhow::Error) -> anyhow::Error {
        if self.active {
            let c = global();
            say(&format!("error on rank {} of {}: {e:#}\nstopping all ranks", c.rank(), c.size()));
            c.abort(1);
        }
        e
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.active {
            global().barrier();
            #[cfg(feature = "mpi")]
            mpi_impl::finalize();
        }
    }
}

/// A panic on one rank (a bug, or a failed cross-replica consistency check) aborts the job with
/// the rank in the message instead of leaving the other ranks blocked.
#[cfg(feature = "mpi")]
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let c = global();
        say(&format!("rank {} of {} panicked; stopping all ranks", c.rank(), c.size()));
        c.abort(101);
    }));
}

/// Writes one line to stderr in a single write, so that lines of several ranks forwarded by
/// mpirun do not interleave mid-line (`eprintln!` may split a line into several writes).
pub fn say(msg: &str) {
    use std::io::Write;
    let line = format!("{msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The contiguous slice `[start, end)` of a global batch of `global_batch` samples that `rank`
/// of `size` processes. Errors if the batch does not split evenly.
pub fn shard_range(global_batch: usize, rank: usize, size: usize) -> Result<(usize, usize)> {
    ensure!(size > 0 && rank < size, "rank {rank} is not in 0..{size}");
    if !global_batch.is_multiple_of(size) {
        bail!("the batch of {global_batch} images (per micro-batch) cannot be split evenly over {size} replicas: choose optim.batch_size / optim.accumulate divisible by {size}");
    }
    let per = global_batch / size;
    Ok((rank * per, (rank + 1) * per))
}

/// True on every rank iff `local` is true on every rank.
pub fn all_true(local: bool) -> bool {
    let c = global();
    if c.size() == 1 {
        return local;
    }
    let mut v = [if local { 1.0 } else { 0.0 }];
    c.all_reduce_sum(&mut v);
    v[0] as usize == c.size()
}

/// Mean over replicas of each value (in place).
pub fn all_reduce_mean(values: &mut [f32]) {
    let c = global();
    if c.size() > 1 {
        c.all_reduce_sum(values);
        let inv = 1.0 / c.size() as f32;
        values.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Replaces every gradient by its mean over replicas (one all-reduce for the whole map). Each
/// rank's gradient is that of its local mean loss, so the mean is the gradient of the global
/// mean loss. Errors if the replicas hold different sets of gradients.
pub fn average_gradients(grads: &mut GradMap) -> Result<()> {
    let c = global();
    if c.size() == 1 {
        return Ok(());
    }
    let mut flat: Vec<f32> = Vec::new();
    let mut layout = Vec::with_capacity(grads.grads.len());
    for (name, g) in &grads.grads {
        let v = g.try_to_vec_as::<f32>().map_err(|e| anyhow::anyhow!("gradient {name}: {e:?}"))?;
        layout.push((name.clone(), v.len(), g.device()));
        flat.extend(v);
    }
    // Header: number of tensors and elements; every rank must contribute the same.
    let header = [layout.len() as f32, flat.len() as f32];
    flat.extend_from_slice(&header);
    c.all_reduce_sum(&mut flat);
    let n = flat.len();
    let r = c.size() as f32;
    ensure!(
        flat[n - 2] == header[0] * r && flat[n - 1] == header[1] * r,
        "replicas have different gradients (rank {}: {} tensors, {} values); the model or configuration differs between ranks",
        c.rank(),
        header[0],
        header[1]
    );
    let mut off = 0;
    for (name, len, device) in layout {
        let v: Vec<f32> = flat[off..off + len].iter().map(|x| x / r).collect();
        off += len;
        grads.grads.insert(name, Tensor::<1>::from_data(TensorData::new(v, [len]), &device));
    }
    Ok(())
}

/// Test hook: `BYOL_FAULT=RANK:STEP[:exit|error|panic]` makes rank RANK fail when it reaches
/// optimizer step STEP — `exit` ends the process at once (as a crash would), `error` returns an
/// error, `panic` panics. Used to check that the other ranks stop instead of hanging.
pub fn inject_fault(step: usize) -> Result<()> {
    let Ok(spec) = std::env::var("BYOL_FAULT") else {
        return Ok(());
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (Some(r), Some(s)) =
        (parts.first().and_then(|v| v.parse::<usize>().ok()), parts.get(1).and_then(|v| v.parse::<usize>().ok()))
    else {
        bail!("BYOL_FAULT={spec:?}: expected RANK:STEP[:exit|error|panic]");
    };
    if r != global().rank() || s != step {
        return Ok(());
    }
    match parts.get(2).copied().unwrap_or("exit") {
        "exit" => {
            say(&format!("BYOL_FAULT: rank {r} exits at step {s}"));
            std::process::exit(3)
        }
        "error" => bail!("BYOL_FAULT: injected error on rank {r} at step {s}"),
        "panic" => panic!("BYOL_FAULT: injected panic on rank {r} at step {s}"),
        other => bail!("BYOL_FAULT={spec:?}: unknown mode {other:?} (exit, error, panic)"),
    }
}

#[cfg(feature = "mpi")]
mod mpi_impl {
    use std::sync::Mutex;

    use anyhow::{Context, Result};
    use mpi::collective::SystemOperation;
    use mpi::environment::{Threading, Universe};
    use mpi::topology::Communicator;
    use mpi::traits::CommunicatorCollectives;

    use super::Collective;

    /// Kept here so `finalize` can drop it (MPI_Finalize) at the end of the job.
    static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

    /// `MPI_COMM_WORLD`. MPI is initialised with `MPI_THREAD_SERIALIZED`: calls may come from
    /// any thread (the autodiff backward), and this lock serialises them.
    pub struct MpiCollective {
        rank: usize,
        size: usize,
        lock: Mutex<()>,
    }

    impl MpiCollective {
        pub fn init() -> Result<Self> {
            let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
                .context("MPI is already initialised in this process")?;
            anyhow::ensure!(
                level != Threading::Single,
                "the MPI library offers no thread support ({level:?}); byol needs MPI_THREAD_FUNNELED or better"
            );
            let world = universe.world();
            let c = Self { rank: world.rank() as usize, size: world.size() as usize, lock: Mutex::new(()) };
            if let Ok(mut u) = UNIVERSE.lock() {
                *u = Some(universe);
            }
            Ok(c)
        }
    }

    pub fn finalize() {
        if let Ok(mut u) = UNIVERSE.lock() {
            u.take();
        }
    }

    fn world() -> mpi::topology::SimpleCommunicator {
        mpi::topology::SimpleCommunicator::world()
    }

    impl Collective for MpiCollective {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let send = buf.to_vec();
            world().all_reduce_into(&send[..], buf, SystemOperation::sum());
        }
        fn barrier(&self) {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            world().barrier();
        }
        fn abort(&self, code: i32) -> ! {
            world().abort(code)
        }
        fn transport(&self) -> &'static str {
            "mpi"
        }
    }
}
