//! Data-parallel training over MPI (`--features mpi`, Open MPI's `mpirun` on PATH): two replicas
//! with half the batch each must produce the parameters of one process with the whole batch
//! (cross-replica BatchNorm on), per-replica BatchNorm must not, and a replica that dies must
//! stop the job with an error instead of a hang. Runs the `byol` binary on 2 local CPU processes
//! with a tiny ResNet-18 (width 4, CIFAR stem, 16 px views) on Fashion-MNIST.
#![cfg(feature = "mpi")]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "common/runs.rs"]
mod runs;
use runs::*;

/// `mpirun -n <n>` on this machine; `env` is exported to every rank.
fn mpirun(n: usize, args: &[String], env: &[(&str, &str)], limit: Duration) -> (Output, bool) {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n", &n.to_string()]);
    // PMIx's default shared-memory key store needs free space in the session directory (/tmp);
    // on a nearly full disk MPI_Init fails with "PMIX ERROR: OUT-OF-RESOURCE". The hash store
    // needs none (docs/distributed.md, troubleshooting).
    cmd.env("PMIX_MCA_gds", "hash");
    for (k, v) in env {
        cmd.env(k, v);
        cmd.args(["-x", k]);
    }
    cmd.arg(env!("CARGO_BIN_EXE_byol")).args(args);
    run_with_timeout(cmd, limit)
}

#[test]
fn two_replicas_with_half_batches_match_one_process_with_the_whole_batch() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = 2;
    let ranks = |args: Vec<String>| mpirun(2, &args, &[], Duration::from_secs(300));
    let [one, sync, local] = one_sync_local(dir.path(), steps, "rank 1 of 2 (mpi)", ranks);

    // The same replicas as threads of one process (`--devices 2`): the same sums in the same order.
    let threads = dir.path().join("threads");
    let mut args = pretrain_args(&threads, steps, &[]);
    args.extend(["--devices".to_string(), "2".into()]);
    let o = single(&args);
    assert!(o.status.success(), "--devices 2 failed:\n{}", text(&o));

    // Only rank 0 writes the run folder; the logged losses are the global ones.
    let b = check_against_one_process(&one, &sync, &local, steps, "2 ranks × 4");
    assert_eq!(diffs(&b, &checkpoint(&threads, steps)), [0.0; 3], "2 MPI ranks and 2 device replicas differ");
}

/// Gradient accumulation and resume work unchanged. One step of 2 replicas × accumulate 2
/// (micro-batches of 2 per replica) matches one process × accumulate 2; and 2 replicas stopped
/// after 2 steps and resumed (all ranks read rank 0's checkpoint) reproduce an uninterrupted
/// 4-step data-parallel run bit for bit. (Over several steps, 1×B and 2×B/2 drift apart by
/// float rounding amplified by the tiny BatchNorm batches, ~1e-3 after 4 steps here, so the
/// multi-step comparison is between data-parallel runs.)
#[test]
fn accumulation_and_resume_work_with_replicas() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| dir.path().join(name);
    let acc = ["optim.accumulate=2"];
    let limit = Duration::from_secs(300);
    let o = single(&pretrain_args(&run("one"), 1, &acc));
    assert!(o.status.success(), "single process failed:\n{}", text(&o));
    let (o, t) = mpirun(2, &pretrain_args(&run("dp1"), 1, &acc), &[], limit);
    assert!(!t && o.status.success(), "mpirun -n 2 failed:\n{}", text(&o));
    let d = assert_within_1e5(&checkpoint(&run("one"), 1), &checkpoint(&run("dp1"), 1), "accumulate 2");
    println!("accumulate 2, one step, max |Δ| (online, target, probe): {d:?}");

    let (o, t) = mpirun(2, &pretrain_args(&run("full"), 4, &acc), &[], limit);
    assert!(!t && o.status.success(), "mpirun -n 2 failed:\n{}", text(&o));
    let (o, t) = mpirun(2, &pretrain_args(&run("parts"), 2, &acc), &[], limit);
    assert!(!t && o.status.success(), "mpirun -n 2 failed:\n{}", text(&o));
    let parts = run("parts").display().to_string();
    let resume: Vec<String> =
        ["pretrain", "--resume", &parts, "--set", "run.stop_after=2"].iter().map(|s| s.to_string()).collect();
    let (o, t) = mpirun(2, &resume, &[], limit);
    assert!(!t && o.status.success(), "mpirun -n 2 --resume failed:\n{}", text(&o));
    assert!(text(&o).contains("resuming from"), "{}", text(&o));
    assert_identical(&run("full"), &run("parts"), 4, "a resumed data-parallel run vs an uninterrupted one");
}

#[test]
fn batch_not_divisible_by_the_replicas_is_an_error() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (o, t) = mpirun(3, &pretrain_args(dir.path(), 1, &[]), &[], Duration::from_secs(120));
    assert!(!t, "timed out:\n{}", text(&o));
    assert!(!o.status.success());
    assert!(text(&o).contains("cannot be split evenly over 3 replicas"), "{}", text(&o));
}

/// A rank that dies (crash-like exit, an error, a panic) at step 1 of 3 stops the other rank.
#[test]
fn a_replica_that_dies_stops_the_job_instead_of_hanging() {
    if !have_fashion_mnist() {
        return;
    }
    for (mode, expect) in [
        ("exit", "BYOL_FAULT: rank 1 exits at step 1"),
        ("error", "error on rank 1 of 2: BYOL_FAULT: injected error on rank 1 at step 1"),
        ("panic", "rank 1 of 2 panicked; stopping all ranks"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("1:1:{mode}");
        let start = Instant::now();
        let (o, timed_out) =
            mpirun(2, &pretrain_args(dir.path(), 3, &[]), &[("BYOL_FAULT", &spec)], Duration::from_secs(120));
        let all = text(&o);
        assert!(!timed_out, "{mode}: the job hung after rank 1 died:\n{all}");
        assert!(!o.status.success(), "{mode}: mpirun reported success:\n{all}");
        assert!(all.contains(expect), "{mode}: no clear message {expect:?} in:\n{all}");
        println!("{mode}: job stopped in {:.1} s, exit status {:?}", start.elapsed().as_secs_f64(), o.status.code());
    }
}
