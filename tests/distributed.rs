//! Data-parallel training over MPI (`--features mpi`, Open MPI's `mpirun` on PATH): two replicas
//! with half the batch each must produce the parameters of one process with the whole batch
//! (cross-replica BatchNorm on), per-replica BatchNorm must not, and a replica that dies must
//! stop the job with an error instead of a hang. Runs the `byol` binary on 2 local CPU processes
//! with a tiny ResNet-18 (width 4, CIFAR stem, 16 px views) on Fashion-MNIST.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use byol::checkpoint::Checkpoint;
use byol::params::HostTensors;

fn have_fashion_mnist() -> bool {
    let found = byol::datasets::find_fashion_mnist().is_some();
    if !found {
        println!("SKIPPED: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
    }
    found
}

/// `byol pretrain` arguments of the tiny run: global batch 8, `steps` optimizer steps.
fn pretrain_args(out: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "model.encoder.width=4".to_string(),
        "model.encoder.stem=\"cifar\"".into(),
        "data.image_size=16".into(),
        "model.projector.hidden=32".into(),
        "model.projector.out=16".into(),
        "model.predictor.hidden=32".into(),
        "model.predictor.out=16".into(),
        "data.limit=64".into(),
        "optim.batch_size=8".into(),
        "optim.epochs=1".into(),
        "optim.optimizer=\"lars\"".into(),
        format!("run.stop_after={steps}"),
        "monitor.knn_every=0".into(),
        "run.threads=1".into(),
        "run.log_every=1".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut args = vec!["pretrain".into(), "--preset".into(), "fashion-mnist".into(), "--out".into()];
    args.push(out.display().to_string());
    for s in sets {
        args.push("--set".into());
        args.push(s);
    }
    args
}

/// Runs a command, killing it after `limit`; returns its output and whether it timed out.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> (Output, bool) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the command (is Open MPI's mpirun installed? apt-get install openmpi-bin)");
    let start = Instant::now();
    let mut timed_out = false;
    while child.try_wait().expect("waiting for the child").is_none() {
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().expect("collecting the output"), timed_out)
}

/// One process, no MPI.
fn single(args: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_byol"));
    cmd.args(args);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(300));
    assert!(!timed_out, "the single-process run timed out");
    out
}

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

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn checkpoint(run: &Path, step: usize) -> Checkpoint {
    let p: PathBuf = run.join(format!("checkpoints/step-{step:08}.safetensors"));
    Checkpoint::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
}

/// Largest |a − b| over every tensor of two sets with the same names and shapes.
fn max_diff(a: &HostTensors, b: &HostTensors) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0f32;
    for (k, (sa, va)) in a {
        let (sb, vb) = &b[k];
        assert_eq!(sa, sb, "{k}");
        for (x, y) in va.iter().zip(vb) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

/// (online, target, probe) differences between two runs' checkpoints.
fn diffs(a: &Checkpoint, b: &Checkpoint) -> [f32; 3] {
    [max_diff(&a.online, &b.online), max_diff(&a.target, &b.target), max_diff(&a.probe, &b.probe)]
}

#[test]
fn two_replicas_with_half_batches_match_one_process_with_the_whole_batch() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = 2;
    let (one, sync, local) = (dir.path().join("one"), dir.path().join("sync"), dir.path().join("local"));

    let o = single(&pretrain_args(&one, steps, &[]));
    assert!(o.status.success(), "single process failed:\n{}", text(&o));
    let limit = Duration::from_secs(300);
    let (o, t) = mpirun(2, &pretrain_args(&sync, steps, &[]), &[], limit);
    assert!(!t && o.status.success(), "mpirun -n 2 failed:\n{}", text(&o));
    assert!(text(&o).contains("rank 1 of 2 (mpi)"), "the run was not data-parallel:\n{}", text(&o));
    let (o, t) = mpirun(2, &pretrain_args(&local, steps, &["run.sync_bn=false"]), &[], limit);
    assert!(!t && o.status.success(), "mpirun -n 2 (per-replica BN) failed:\n{}", text(&o));

    // Only rank 0 writes: one checkpoint per run, no stray files from rank 1.
    let (a, b, c) = (checkpoint(&one, steps), checkpoint(&sync, steps), checkpoint(&local, steps));
    let d_sync = diffs(&a, &b);
    let d_local = diffs(&a, &c);
    println!("max |Δ| vs one process (online, target, probe): sync BN {d_sync:?}, per-replica BN {d_local:?}");
    for (what, d) in ["online", "target", "probe"].iter().zip(d_sync) {
        assert!(d <= 1e-5, "{what} parameters differ by {d} between 2×4 (sync BN) and 1×8");
    }
    assert!(d_local[0] > 1e-4, "per-replica BN should change the online weights, max |Δ| = {}", d_local[0]);
    assert!(d_local[1] > 1e-4, "per-replica BN should change the target weights, max |Δ| = {}", d_local[1]);
    // The step trained something: the online weights moved away from the EMA target.
    let enc = |h: &HostTensors| {
        h.iter()
            .filter(|(k, _)| k.starts_with("encoder."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HostTensors>()
    };
    assert!(max_diff(&enc(&b.online), &enc(&b.target)) > 1e-4);

    // The logged losses are the global ones.
    let losses = |run: &Path| byol::metrics::MetricsLog::open(&run.join("metrics.jsonl")).unwrap().losses();
    let (la, lb) = (losses(&one), losses(&sync));
    assert_eq!(la.len(), steps);
    assert_eq!(lb.len(), steps);
    for ((_, x), (_, y)) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-5, "loss {x} (1 process) vs {y} (2 replicas)");
    }
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
    let d = diffs(&checkpoint(&run("one"), 1), &checkpoint(&run("dp1"), 1));
    println!("accumulate 2, one step, max |Δ| (online, target, probe): {d:?}");
    for (what, d) in ["online", "target", "probe"].iter().zip(d) {
        assert!(d <= 1e-5, "{what} parameters differ by {d}");
    }

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
    let (a, b) = (checkpoint(&run("full"), 4), checkpoint(&run("parts"), 4));
    assert_eq!(diffs(&a, &b), [0.0; 3], "a resumed data-parallel run differs from an uninterrupted one");
    assert_eq!(a.optimizer, b.optimizer, "LARS state differs after resume");
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
