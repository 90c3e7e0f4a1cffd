#!/usr/bin/env bash
# Learning check of issue "[3 of 6]" item 9: runs the `fashion-mnist` preset (or the preset with
# extra `--set` overrides given as arguments) and prints the kNN top-1 curve per epoch (epoch 0 =
# random init) from the run's metrics.jsonl, for BENCHMARKS.md. Minutes, not part of CI.
#
# Usage: scripts/learning-check.sh RUN_DIR [--set key=value ...]
#   scripts/learning-check.sh /tmp/runs/fm                          # the preset (~10 min, 2 cores)
#   scripts/learning-check.sh /tmp/runs/fm1 --set run.seed=1        # another seed
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/learning-check.sh RUN_DIR [--set key=value ...]}
shift
cargo build --release
start=$(date +%s)
target/release/byol pretrain --preset fashion-mnist --out "$out" "$@"
echo "wall time: $(( $(date +%s) - start )) s"
echo "| epoch | step | kNN top-1 | kNN top-5 |"
echo "|---|---|---|---|"
python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "knn_top1" in r:
        print(f"| {r['epoch']} | {r['step']} | {100 * r['knn_top1']:.2f} % | {100 * r['knn_top5']:.2f} % |")
PY
