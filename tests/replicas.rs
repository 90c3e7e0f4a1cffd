//! Several devices in one process (`byol pretrain --devices`): replicas that are threads of one
//! process must train exactly like one process with the whole batch (cross-replica BatchNorm on),
//! resume exactly, and stop together with a clear error when one fails. On the CPU the "devices"
//! are replicas sharing the cores, which exercises the same code path as several GPUs.

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
    let devices = |args: Vec<String>| byol(&with(args, &["--devices", "0,1"]), &[], Duration::from_secs(300));
    let [one, sync, local] = one_sync_local(dir.path(), steps, "2 replicas in this process", devices);
    // Rank 0 alone writes the run folder; the logged losses are the global ones.
    check_against_one_process(&one, &sync, &local, steps, "2 devices × 4");
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
    assert_identical(&run("full"), &run("parts"), 4, "a resumed run on 2 devices vs an uninterrupted one");
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
