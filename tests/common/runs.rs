//! Helpers of the data-parallel tests (tests/distributed.rs, tests/replicas.rs): a tiny
//! pretraining run of the `byol` binary on Fashion-MNIST and comparisons of its checkpoints.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use byol::checkpoint::Checkpoint;
use byol::params::HostTensors;

pub fn have_fashion_mnist() -> bool {
    let found = byol::datasets::find_fashion_mnist().is_some();
    if !found {
        println!("SKIPPED: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
    }
    found
}

/// `byol pretrain` arguments of the tiny run: global batch 8, `steps` optimizer steps.
pub fn pretrain_args(out: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
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
pub fn run_with_timeout(mut cmd: Command, limit: Duration) -> (Output, bool) {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| {
            panic!("cannot start {:?}: {e} (mpirun: apt-get install openmpi-bin)", cmd.get_program())
        });
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

/// The `byol` binary in one process (no MPI), given up on after 300 s.
pub fn single(args: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_byol"));
    cmd.args(args);
    let (out, timed_out) = run_with_timeout(cmd, Duration::from_secs(300));
    assert!(!timed_out, "the single-process run timed out");
    out
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn checkpoint(run: &Path, step: usize) -> Checkpoint {
    let p: PathBuf = run.join(format!("checkpoints/step-{step:08}.safetensors"));
    Checkpoint::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
}

/// Largest |a − b| over every tensor of two sets with the same names and shapes.
pub fn max_diff(a: &HostTensors, b: &HostTensors) -> f32 {
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
pub fn diffs(a: &Checkpoint, b: &Checkpoint) -> [f32; 3] {
    [max_diff(&a.online, &b.online), max_diff(&a.target, &b.target), max_diff(&a.probe, &b.probe)]
}

/// Every online, target and probe parameter of `b` within 1e-5 of `a`'s; `what` names the runs.
pub fn assert_within_1e5(a: &Checkpoint, b: &Checkpoint, what: &str) -> [f32; 3] {
    let d = diffs(a, b);
    for (part, x) in ["online", "target", "probe"].iter().zip(d) {
        assert!(x <= 1e-5, "{part} parameters differ by {x} ({what})");
    }
    d
}

/// The two runs logged `steps` losses each, equal within 1e-5 (the global mean loss).
pub fn assert_same_losses(a: &Path, b: &Path, steps: usize) {
    let losses = |run: &Path| byol::metrics::MetricsLog::open(&run.join("metrics.jsonl")).unwrap().losses();
    let (la, lb) = (losses(a), losses(b));
    assert_eq!((la.len(), lb.len()), (steps, steps), "metrics records of {} and {}", a.display(), b.display());
    for ((_, x), (_, y)) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-5, "loss {x} ({}) vs {y} ({})", a.display(), b.display());
    }
}

/// The checkpoints of step `step` of two runs hold the same parameters and optimizer state, bit
/// for bit.
pub fn assert_identical(a: &Path, b: &Path, step: usize, what: &str) {
    let (a, b) = (checkpoint(a, step), checkpoint(b, step));
    assert_eq!(diffs(&a, &b), [0.0; 3], "{what}: parameters differ");
    assert_eq!(a.optimizer, b.optimizer, "{what}: optimizer state differs");
}

/// The data-parallel checks shared by the MPI and device-replica tests, after `steps` steps of
/// the same run in one process (`one`), on replicas with cross-replica BatchNorm (`sync`) and on
/// replicas with per-replica BatchNorm (`local`): `sync` matches `one` within 1e-5 and logged
/// the same (global) losses, `local` does not match (so the comparison is sensitive), and the
/// online encoder moved away from its EMA target (a step was taken). Returns `sync`'s checkpoint.
pub fn check_against_one_process(one: &Path, sync: &Path, local: &Path, steps: usize, what: &str) -> Checkpoint {
    let (a, b, c) = (checkpoint(one, steps), checkpoint(sync, steps), checkpoint(local, steps));
    let d_sync = assert_within_1e5(&a, &b, &format!("{what} with sync BN vs one process"));
    let d_local = diffs(&a, &c);
    println!("{what}, max |Δ| vs one process (online, target, probe): sync BN {d_sync:?}, per-replica BN {d_local:?}");
    assert!(d_local[0] > 1e-4, "per-replica BN should change the online weights, max |Δ| = {}", d_local[0]);
    assert!(d_local[1] > 1e-4, "per-replica BN should change the target weights, max |Δ| = {}", d_local[1]);
    let enc = |h: &HostTensors| -> HostTensors {
        h.iter().filter(|(k, _)| k.starts_with("encoder.")).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    assert!(max_diff(&enc(&b.online), &enc(&b.target)) > 1e-4, "the online encoder equals the target: no step");
    assert_same_losses(one, sync, steps);
    b
}

/// Trains the tiny run for `steps` steps in one process (`DIR/one`) and twice with `launch`,
/// which starts it on replicas: with cross-replica BatchNorm (`DIR/sync`, whose output must
/// contain `marker`, the proof it ran data-parallel) and with per-replica BatchNorm
/// (`DIR/local`). Returns the three run folders, for [`check_against_one_process`].
pub fn one_sync_local(
    dir: &Path,
    steps: usize,
    marker: &str,
    launch: impl Fn(Vec<String>) -> (Output, bool),
) -> [PathBuf; 3] {
    let [one, sync, local] = ["one", "sync", "local"].map(|n| dir.join(n));
    let o = single(&pretrain_args(&one, steps, &[]));
    assert!(o.status.success(), "single process failed:\n{}", text(&o));
    for (run, extra) in [(&sync, &[][..]), (&local, &["run.sync_bn=false"][..])] {
        let (o, t) = launch(pretrain_args(run, steps, extra));
        assert!(!t && o.status.success(), "the replicated run {} failed:\n{}", run.display(), text(&o));
        assert!(text(&o).contains(marker), "the run was not data-parallel (no {marker:?}):\n{}", text(&o));
    }
    [one, sync, local]
}
