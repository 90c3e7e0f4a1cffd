//! Several devices in one process (`byol pretrain --devices`): replicas that are threads of one
//! process must train exactly like one process with the whole batch (cross-replica BatchNorm on),
//! resume exactly, and stop together with a clear error when one fails. On the CPU the "devices"
//! are replicas sharing the cores, which exercises the same code path as several GPUs.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "common/runs.rs"]
mod runs;
use runs::*;

/// `byol` with `args`, `env` set, given up on after `limit`.
fn byol(args: &[String], env: &[(&str, &str)], limit: Duration) -> (Output, bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_byol"));
    cmd.args(args).envs(env.iter().copied());
    run_with_timeout(cmd, limit)
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn two_devices_in_one_process_match_one_process_with_the_whole_batch() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = 2;
    let (one, sync, local) = (dir.path().join("one"), dir.path().join("sync"), dir.path().join("local"));
    let o = single(&pretrain_args(&one, steps, &[]));
    assert!(o.status.success(), "single process failed:\n{}", text(&o));
    let limit = Duration::from_secs(300);
    let (o, t) = byol(&with(pretrain_args(&sync, steps, &[]), &["--devices", "2"]), &[], limit);
    assert!(!t && o.status.success(), "--devices 2 failed:\n{}", text(&o));
    assert!(text(&o).contains("2 replicas in this process"), "the run was not data-parallel:\n{}", text(&o));
    let (o, t) = byol(&with(pretrain_args(&local, steps, &["run.sync_bn=false"]), &["--devices", "0,1"]), &[], limit);
    assert!(!t && o.status.success(), "--devices 0,1 (per-replica BN) failed:\n{}", text(&o));

    let (a, b, c) = (checkpoint(&one, steps), checkpoint(&sync, steps), checkpoint(&local, steps));
    let (d_sync, d_local) = (diffs(&a, &b), diffs(&a, &c));
    println!("max |Δ| vs one process (online, target, probe): sync BN {d_sync:?}, per-replica BN {d_local:?}");
    for (what, d) in ["online", "target", "probe"].iter().zip(d_sync) {
        assert!(d <= 1e-5, "{what} parameters differ by {d} between 2 devices × 4 (sync BN) and 1 × 8");
    }
    assert!(d_local[0] > 1e-4, "per-replica BN should change the online weights, max |Δ| = {}", d_local[0]);
    // The run trained: the online encoder moved away from the EMA target.
    let moved = b.online.iter().filter(|(k, _)| k.starts_with("encoder.")).any(|(k, (_, v))| {
        let (_, t) = &b.target[k];
        v.iter().zip(t).any(|(x, y)| (x - y).abs() > 1e-4)
    });
    assert!(moved, "the online encoder equals the target: no step was taken");
    // Rank 0 alone writes: one metrics record per step, the global losses.
    let losses = |run: &Path| byol::metrics::MetricsLog::open(&run.join("metrics.jsonl")).unwrap().losses();
    let (la, lb) = (losses(&one), losses(&sync));
    assert_eq!((la.len(), lb.len()), (steps, steps));
    for ((_, x), (_, y)) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-5, "loss {x} (1 process) vs {y} (2 devices)");
    }
}

/// Accumulation and resume with device replicas: 2 steps, then `--resume` for 2 more (the device
/// list comes from the run's config.toml), equal an uninterrupted 4-step run bit for bit.
#[test]
fn resume_with_device_replicas_is_exact() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| dir.path().join(name);
    let sets = ["optim.accumulate=2", "run.devices=\"2\""];
    let limit = Duration::from_secs(300);
    for (name, steps) in [("full", 4), ("parts", 2)] {
        let (o, t) = byol(&pretrain_args(&run(name), steps, &sets), &[], limit);
        assert!(!t && o.status.success(), "{name} failed:\n{}", text(&o));
    }
    let parts = run("parts").display().to_string();
    let resume: Vec<String> =
        ["pretrain", "--resume", &parts, "--set", "run.stop_after=2"].iter().map(|s| s.to_string()).collect();
    let (o, t) = byol(&resume, &[], limit);
    assert!(!t && o.status.success(), "--resume failed:\n{}", text(&o));
    assert!(text(&o).contains("resuming from") && text(&o).contains("2 replicas in this process"), "{}", text(&o));
    let (a, b) = (checkpoint(&run("full"), 4), checkpoint(&run("parts"), 4));
    assert_eq!(diffs(&a, &b), [0.0; 3], "a resumed run on 2 devices differs from an uninterrupted one");
    assert_eq!(a.optimizer, b.optimizer, "LARS state differs after resume");
}

/// A replica that fails (an error, a panic) at step 2 of 4 stops the other one: the process exits
/// non-zero with a message naming the replica, and the checkpoint of step 1 is intact.
#[test]
fn a_failing_replica_stops_the_others_and_keeps_the_checkpoint() {
    if !have_fashion_mnist() {
        return;
    }
    for (mode, expect) in [
        ("error", "BYOL_FAULT: injected error on rank 1 at step 2"),
        ("panic", "BYOL_FAULT: injected panic on rank 1 at step 2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let args = with(pretrain_args(dir.path(), 4, &["run.checkpoint_every=1"]), &["--devices", "2"]);
        let spec = format!("1:2:{mode}");
        let start = Instant::now();
        let (o, timed_out) = byol(&args, &[("BYOL_FAULT", &spec)], Duration::from_secs(120));
        let all = text(&o);
        assert!(!timed_out, "{mode}: the process hung after replica 1 failed:\n{all}");
        assert_eq!(o.status.code(), Some(1), "{mode}: expected exit status 1:\n{all}");
        assert!(all.contains("replica 1 of 2 (device 1) failed"), "{mode}: replica not named:\n{all}");
        assert!(all.contains(expect), "{mode}: no {expect:?} in:\n{all}");
        let ck = byol::checkpoint::Checkpoint::load(&dir.path().join("checkpoints/step-00000001.safetensors"));
        assert!(ck.is_ok_and(|c| c.step == 1), "{mode}: the checkpoint of step 1 is missing or broken");
        println!("{mode}: stopped in {:.1} s", start.elapsed().as_secs_f64());
    }
}

#[test]
fn bad_device_lists_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (spec, expect) in
        [("two", "expected a number of devices"), ("0", "at least 1"), ("1,1", "listed twice"), ("0,-1", "\"0,-1\"")]
    {
        let args = with(pretrain_args(dir.path(), 1, &[]), &["--devices", spec]);
        let (o, t) = byol(&args, &[], Duration::from_secs(60));
        let all = text(&o);
        assert!(!t && o.status.code() == Some(1), "--devices {spec}: expected exit 1:\n{all}");
        assert!(all.contains(expect) && !all.contains("panicked"), "--devices {spec}: no {expect:?} in:\n{all}");
    }
}
