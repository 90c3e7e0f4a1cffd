#!/usr/bin/env bash
# Side-by-side timing of the BYOL training step: `byol bench` vs the PyTorch reference
# (scripts/bench_pytorch.py), interleaved per case: for each round, each case runs byol once then
# PyTorch once. Both use --threads $THREADS (default 2), --steps 3 --warmup 1.
#
# Usage: BYOL=target/debug/byol PYTHON=python3 bash scripts/bench-vs-pytorch.sh [--with-w64]
#   --with-w64  also run ResNet-18 CIFAR stem width 64 (slow on small CPUs)
# Env: BYOL (default target/debug/byol), PYTHON (default python3), ROUNDS (default 2),
#      THREADS (default 2).
# PyTorch is not part of CI; install it in a venv:
#   python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch torchvision
#   PYTHON=/tmp/tvenv/bin/python bash scripts/bench-vs-pytorch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BYOL=${BYOL:-target/debug/byol}
PYTHON=${PYTHON:-python3}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
WIDTHS="16 32"
[ "${1:-}" = "--with-w64" ] && WIDTHS="16 32 64"

COMMON="--steps 3 --warmup 1 --threads $THREADS"
CASES=()
for w in $WIDTHS; do
  CASES+=("--stem cifar --width $w --batch 64 --image-size 32 --in-channels 3")
done
CASES+=("--stem imagenet --width 16 --batch 128 --in-channels 1 --image-size 28 --hidden 512 --out 128")

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  byol=$BYOL  python=$PYTHON  rounds=$ROUNDS  threads=$THREADS"
"$PYTHON" -c 'import torch; print("# torch", torch.__version__)'
for r in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    echo
    echo "## round $r: $c"
    # shellcheck disable=SC2086
    "$BYOL" bench $c $COMMON
    # shellcheck disable=SC2086
    "$PYTHON" scripts/bench_pytorch.py $c $COMMON
  done
done
