#!/usr/bin/env bash
# Side-by-side timing of the BYOL training step: `byol bench` vs the PyTorch reference
# (scripts/bench_pytorch.py), interleaved per case: for each round, each case runs byol once then
# PyTorch once. Both use --threads $THREADS (default 2), --steps $STEPS (default 5) --warmup
# $WARMUP (default 2): with 3 steps after 1 warm-up (before the eighth session) the preset
# shape's median step read 168–245 ms, with 10 after 2 it read 123–125 ms (BENCHMARKS.md,
# eighth session). Both also print their fastest step.
#
# Cases (issue "[5 of 6]"): ResNet-18 CIFAR stem, widths 16/32/64 × batch 64/256 at 32 px;
# ResNet-50 ImageNet stem, batch 32 at 128 px; the fashion-mnist preset's shape.
# Usage: BYOL=target/release/byol PYTHON=python3 bash scripts/bench-vs-pytorch.sh [--quick]
#   --quick  only batch 64 (widths 16/32/64) and the preset shape
# Env: BYOL (default target/release/byol), PYTHON (default python3), ROUNDS (default 1),
#      THREADS (default 2), STEPS (default 5), WARMUP (default 2), BASELINE (optional: an older
#      byol binary, run before BYOL in every case, for before/after ratios measured side by side).
# PyTorch is not part of CI; install it in a venv:
#   python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch torchvision
#   PYTHON=/tmp/tvenv/bin/python bash scripts/bench-vs-pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BYOL=${BYOL:-target/release/byol}
PYTHON=${PYTHON:-python3}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-2}

STEPS=${STEPS:-5}
WARMUP=${WARMUP:-2}
COMMON="--steps $STEPS --warmup $WARMUP --threads $THREADS"
CASES=()
if [ "${1:-}" = "--quick" ]; then
  for w in 16 32 64; do
    CASES+=("--stem cifar --width $w --batch 64 --image-size 32 --in-channels 3")
  done
else
  for b in 64 256; do
    for w in 16 32 64; do
      CASES+=("--stem cifar --width $w --batch $b --image-size 32 --in-channels 3")
    done
  done
  CASES+=("--depth 50 --stem imagenet --width 64 --batch 32 --image-size 128 --in-channels 3")
fi
CASES+=("--stem imagenet --width 16 --batch 128 --in-channels 1 --image-size 28 --hidden 512 --out 128")

BASELINE=${BASELINE:-}
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  byol=$BYOL  baseline=${BASELINE:-none}  python=$PYTHON  rounds=$ROUNDS  threads=$THREADS"
"$PYTHON" -c 'import torch; print("# torch", torch.__version__)'
for r in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    echo
    echo "## round $r: $c"
    if [ -n "$BASELINE" ]; then
      echo "# baseline:"
      # shellcheck disable=SC2086
      "$BASELINE" bench $c $COMMON
      echo "# byol:"
    fi
    # shellcheck disable=SC2086
    "$BYOL" bench $c $COMMON
    # shellcheck disable=SC2086
    "$PYTHON" scripts/bench_pytorch.py $c $COMMON
  done
done
