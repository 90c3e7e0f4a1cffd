#!/usr/bin/env python3
"""PyTorch reference of one BYOL pretraining epoch on CIFAR-10, augmentation included.

The counterpart of `byol pretrain --preset cifar10-resnet18 --set optim.epochs=1` (see
scripts/gpu-bench.sh): the CIFAR-10 binary batches read from --data, two views per image made by
torchvision's transforms in DataLoader worker processes with the `cifar` augmentation of
src/augment/config.rs (solo-learn's recipe: RandomResizedCrop 32 px, scale 0.08-1, bicubic; flip
0.5; colour jitter 0.4/0.4/0.2/0.1 with p 0.8; grayscale 0.2; no blur; solarize 0 / 0.2;
CIFAR-10 mean/std), then the step of scripts/bench_pytorch.py (both views through online and
target, backward, LARS, EMA) on --device. Prints the epoch's seconds and images/s, and the
median step time of the epoch's second half.

Needs torch + torchvision; not part of CI.
"""
import argparse
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from bench_pytorch import add_model_args, build_step

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def read_cifar10(folder):
    """uint8 images (N, 3, 32, 32) of data_batch_1..5.bin (the binary version's layout)."""
    sub = os.path.join(folder, "cifar-10-batches-bin")
    folder = sub if os.path.isdir(sub) else folder
    recs = [np.fromfile(os.path.join(folder, f"data_batch_{i}.bin"), dtype=np.uint8).reshape(-1, 3073)
            for i in range(1, 6)]
    return np.concatenate(recs)[:, 1:].reshape(-1, 3, 32, 32)


def view(solarize_p):
    return v2.Compose([
        v2.RandomResizedCrop(32, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                             interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(0.2),
        v2.RandomSolarize(128, p=solarize_p),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


class TwoViews(Dataset):
    def __init__(self, images):
        self.images = torch.from_numpy(images)
        self.t1, self.t2 = view(0.0), view(0.2)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        return self.t1(x), self.t2(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--data", required=True, help="folder with the CIFAR-10 binary batches")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    images = read_cifar10(a.data)
    loader = DataLoader(TwoViews(images), batch_size=a.batch, shuffle=True, drop_last=True,
                        num_workers=a.workers, pin_memory=a.device != "cpu", persistent_workers=False,
                        generator=torch.Generator().manual_seed(0))
    step = build_step(a, a.width, a.device)
    print(f"# torch {torch.__version__}, {len(images)} images, batch {a.batch}, {a.workers} workers, "
          f"device {a.device}", flush=True)
    t0 = time.perf_counter()
    times, n = [], 0
    for v1, v2_ in loader:
        t = time.perf_counter()
        loss = step(v1.to(a.device, non_blocking=True), v2_.to(a.device, non_blocking=True))
        times.append(time.perf_counter() - t)
        n += len(v1)
    secs = time.perf_counter() - t0
    half = sorted(times[len(times) // 2:])
    print(f"pytorch epoch: {n} images in {secs:.1f} s = {n / secs:.1f} images/s "
          f"({len(times)} steps, last loss {loss:.4f}, median step of the second half "
          f"{half[len(half) // 2] * 1e3:.1f} ms)", flush=True)


if __name__ == "__main__":
    main()
