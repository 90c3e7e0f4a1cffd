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
