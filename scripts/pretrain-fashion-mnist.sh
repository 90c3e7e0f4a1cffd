#!/usr/bin/env bash
# The main job on a fresh machine: install Fashion-MNIST (Debian package) if missing, build, and
# pretrain with the fashion-mnist preset. Prints kNN top-1 of the learned encoder next to the
# same encoder at random initialisation. Extra arguments go to `byol pretrain`. The release
# build: the dev build (the tests') keeps Rust's debug checks of unsafe pointer arithmetic in
# our kernels, which make its training step ~1.5× slower.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q dataset-fashion-mnist
fi
cargo build --release
exec target/release/byol pretrain --preset fashion-mnist "$@"
