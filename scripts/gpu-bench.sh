#!/usr/bin/env bash
# GPU side by side (issue "[5 of 6]", item 4): byol's Vulkan build against PyTorch (CUDA) on the
# same NVIDIA GPU, in one run (after a 3-step loss parity check, CPU vs GPU):
#   1. the BYOL step on random inputs (`byol bench --device vulkan` vs scripts/bench_pytorch.py
#      --device cuda), interleaved per round: ResNet-18 CIFAR stem w16/w64 × batch 64/256 at
#      32 px, ResNet-50 ImageNet stem batch 32 at 128 px;
#   2. one CIFAR-10-sized epoch (50,000 images, both views, augmentation on the CPU included):
#      `byol pretrain --preset cifar10-resnet18` for one epoch vs scripts/bench_pytorch_epoch.py,
#      on a synthetic CIFAR-10 (random pixels in the binary format, written here when missing; the
#      machine has no internet). Online probe and kNN monitor off on our side: the reference
#      has neither.
# Usage: BYOL=path/to/byol-built-with-vulkan bash scripts/gpu-bench.sh [OUT_DIR]
# Env: BYOL, PYTHON (default python3), ROUNDS (default 1), DATA (synthetic CIFAR-10 folder),
#      STEP_TIMEOUT / EPOCH_TIMEOUT (seconds per command; a timed-out command is reported, the
#      script goes on), DEVICE (our epoch's run.device, default vulkan), EPOCH_EXTRA (more
#      `--set` overrides for our epoch, e.g. `--set run.stop_after=24` to time part of it).
#      PARTS (default "parity steps epoch r50"; add "profile" for one short w64 batch-256 bench
#      with cubecl's kernel profiling and autotune logs, OUT_DIR/profile/kernels.log and
#      autotune.log): the parts to run, so a 15-minute lease can take them in separate calls.
#      nvidia-smi's utilisation is logged every 2 s to OUT_DIR/smi.csv.
# On the lent device machine: carry this build (gzip it under 64 MiB) and the Vulkan loader
# (.gl/*.deb, unpacked with dpkg -x), and export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/
# icd.d/nvidia_icd.json XDG_RUNTIME_DIR=/tmp. At ~3 s per step (BENCHMARKS.md, 2026-11-28) the
# whole script may not fit the 15 minutes a session is lent; ROUNDS=1 (default) and EPOCH_EXTRA
# with run.stop_after keep it to a few minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
BYOL=${BYOL:-target/release/byol}
PYTHON=${PYTHON:-python3}
OUT=${1:-/tmp/gpu-bench}
ROUNDS=${ROUNDS:-1}
DATA=${DATA:-/tmp/cifar10-synthetic}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
EPOCH_TIMEOUT=${EPOCH_TIMEOUT:-240}
PARTS=${PARTS:-parity steps epoch r50}
mkdir -p "$OUT"
# Everything printed also goes to OUT_DIR/gpu-bench.log, so a run cut short still leaves its log.
exec > >(tee -a "$OUT/gpu-bench.log") 2>&1

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  byol=$BYOL  python=$PYTHON  rounds=$ROUNDS  cpus=$(nproc)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PYTHON" -c 'import torch, torchvision; print("# torch", torch.__version__, "torchvision", torchvision.__version__)'
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm --format=csv -l 2 >"$OUT/smi.csv" 2>&1 &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

if [ ! -f "$DATA/cifar-10-batches-bin/test_batch.bin" ]; then
  "$PYTHON" - "$DATA" <<'EOF'
import os, sys
import numpy as np
d = os.path.join(sys.argv[1], "cifar-10-batches-bin")
os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    rec = rng.integers(0, 256, (10000, 3073), dtype=np.uint8)
    rec[:, 0] %= 10
    rec.tofile(os.path.join(d, name))
EOF
fi

run() { # name timeout command...
  local name=$1 limit=$2
  shift 2
  echo
  echo "## $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "# $name: exit $rc after $((SECONDS - t0)) s$([ $rc = 124 ] && echo " (timed out)")"
}

CIFAR="--stem cifar --width 16,64 --batch 64,256 --image-size 32 --in-channels 3 --steps 10 --warmup 3"
R50="--depth 50 --stem imagenet --width 64 --batch 32 --image-size 128 --in-channels 3 --steps 10 --warmup 3"
steps() { # round cases
  run "byol r$1" "$STEP_TIMEOUT" "$BYOL" bench $2 --device vulkan
  run "pytorch r$1" "$STEP_TIMEOUT" "$PYTHON" scripts/bench_pytorch.py $2 --device cuda
}

want() { [[ " $PARTS " == *" $1 "* ]]; }
# Our `pretrain` runs: the synthetic data, without the online probe and kNN monitor (the
# reference has neither).
PRETRAIN=(pretrain --preset cifar10-resnet18 --set data.dir="\"$DATA\"" --set monitor.knn_every=0
  --set monitor.online_probe=false)
# Parity first: the same 3 training steps (CIFAR ResNet-18 w16, batch 64, same seed, data and
# augmentation) on the CPU and on the GPU; their logged losses should agree to float rounding.
if want parity; then
  for dev in flex vulkan; do
    rm -rf "$OUT/parity-$dev"
    run "parity $dev" "$STEP_TIMEOUT" "$BYOL" "${PRETRAIN[@]}" --out "$OUT/parity-$dev" --set data.limit=256 \
      --set optim.batch_size=64 --set model.encoder.width=16 --set run.stop_after=3 --set run.log_every=1 \
      --set run.device="\"$dev\"" 2>&1 | grep -E "^step|^##|^# |error|panicked"
  done
fi
if want profile; then
  # cubecl reads cubecl.toml from the working directory: kernel times (profiling "basic") and the
  # kernels autotune picks, logged to files there.
  mkdir -p "$OUT/profile"
  printf '[profiling.logger]\nlevel = "basic"\nfile = "kernels.log"\n[autotune.logger]\nlevel = "minimal"\nfile = "autotune.log"\n' \
    >"$OUT/profile/cubecl.toml"
  BYOL_ABS=$(realpath "$BYOL")
  (cd "$OUT/profile" && run "byol profile" "$STEP_TIMEOUT" "$BYOL_ABS" bench --stem cifar --width 64 --batch 256 \
    --image-size 32 --in-channels 3 --steps 2 --warmup 3 --device vulkan)
  wc -l "$OUT"/profile/*.log
fi
want steps && steps 1 "$CIFAR"
if want epoch; then
  rm -rf "$OUT/run"
  run "byol epoch" "$EPOCH_TIMEOUT" "$BYOL" "${PRETRAIN[@]}" --out "$OUT/run" --set optim.epochs=1 \
    --set optim.warmup_epochs=0 --set run.device=${DEVICE:-vulkan} --set run.log_every=20 ${EPOCH_EXTRA:-}
  run "pytorch epoch" "$EPOCH_TIMEOUT" "$PYTHON" scripts/bench_pytorch_epoch.py --data "$DATA" --device cuda \
    --width 64 --batch 256 --workers "$(nproc)"
fi
want r50 && steps 1 "$R50"
for r in $(seq 2 "$ROUNDS"); do
  want steps && steps "$r" "$CIFAR"
  want r50 && steps "$r" "$R50"
done
exit 0
