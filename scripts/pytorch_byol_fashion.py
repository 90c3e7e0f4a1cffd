#!/usr/bin/env python3
"""PyTorch BYOL on Fashion-MNIST with the `fashion-mnist` preset's recipe, as an independent
reference for the learning check of BENCHMARKS.md (issue "[3 of 6]", item 9): does the *recipe*
(architecture, heads, optimizer, tau, augmentations, budget) make kNN beat random init, whatever
the implementation?

Same protocol as `byol pretrain --preset fashion-mnist`: ResNet-18 (torchvision layout, width
--width, --stem), projector/predictor MLP 512-128, symmetric loss with per-view BatchNorm, target
BN in train mode, EMA with the cosine tau schedule, warmup + cosine lr scaled by batch/256, SGD
(momentum 0.9, weight decay --weight-decay on every parameter, as torch.optim.SGD) or LARS
(weight decay 1.5e-6, biases/BN excluded); augmentations T/T' of the `grayscale` preset (torchvision
transforms); kNN k=200, T=0.1 on the online encoder in eval mode, first --knn-train training
images as memory bank, first --knn-test test images. Prints the kNN top-1 at random init and
after every epoch.

The defaults are the preset's current recipe (all 60,000 images, 4 epochs, SGD base lr 0.06,
weight decay 5e-4). Needs torch + torchvision + numpy (a venv; not part of CI). Examples:
  python scripts/pytorch_byol_fashion.py                      # the preset's recipe
  python scripts/pytorch_byol_fashion.py --limit 10000 --epochs 1 --base-lr 1.0 --weight-decay 1.5e-6
      # the first investigation of BENCHMARKS.md
"""
import argparse
import gzip
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2 as T

sys.path.insert(0, os.path.dirname(__file__))
from bench_pytorch import resnet18  # noqa: E402  (same torchvision layout as byol)

MEAN, STD = 0.2860, 0.3530


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Linear(h, o))


def view(blur_p, solarize_p, crop_lo):
    return T.Compose([
        T.RandomResizedCrop(28, scale=(crop_lo, 1.0), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
        T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 2.0))], p=blur_p),
        T.RandomSolarize(0.5, p=solarize_p),
    ])


@torch.no_grad()
def knn(enc, xtr, ytr, xte, yte, k=200, t=0.1):
    enc.eval()
    f = lambda x: F.normalize(torch.cat([enc(((b - MEAN) / STD)) for b in x.split(256)]), dim=1)
    ftr, fte = f(xtr), f(xte)
    enc.train()
    correct = 0
    for s in range(0, len(fte), 500):
        sim = fte[s:s + 500] @ ftr.T
        w, i = sim.topk(k, dim=1)
        votes = torch.zeros(len(w), 10).scatter_add_(1, ytr[i], (w / t).exp())
        correct += (votes.argmax(1) == yte[s:s + 500]).sum().item()
    return 100.0 * correct / len(fte)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--limit", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "lars"])
    ap.add_argument("--base-lr", type=float, default=0.06)
    ap.add_argument("--weight-decay", type=float, default=5e-4, help="SGD only")
    ap.add_argument("--tau", type=float, default=0.99)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--stem", default="imagenet")
    ap.add_argument("--crop-lo", type=float, default=0.08)
    ap.add_argument("--knn-train", type=int, default=10000)
    ap.add_argument("--knn-test", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr = torch.tensor(idx(f"{a.data}/train-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    ytr = torch.tensor(idx(f"{a.data}/train-labels-idx1-ubyte.gz"), dtype=torch.long)
    xte = torch.tensor(idx(f"{a.data}/t10k-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255
    yte = torch.tensor(idx(f"{a.data}/t10k-labels-idx1-ubyte.gz"), dtype=torch.long)
    bank = (xtr[:a.knn_train], ytr[:a.knn_train], xte[:a.knn_test], yte[:a.knn_test])
    data = xtr[:a.limit]

    enc, d = resnet18(a.width, a.stem, 1)
    online = nn.ModuleDict({"enc": enc, "proj": mlp(d, 512, 128), "pred": mlp(128, 512, 128)})
    target = nn.ModuleDict({"enc": resnet18(a.width, a.stem, 1)[0], "proj": mlp(d, 512, 128)})
    target.load_state_dict({k: v for k, v in online.state_dict().items() if not k.startswith("pred")})
    for p in target.parameters():
        p.requires_grad_(False)
    excl = [p for n, p in online.named_parameters() if p.ndim == 1]
    regular = [p for n, p in online.named_parameters() if p.ndim > 1]
    if a.optimizer == "sgd":
        opt = torch.optim.SGD(online.parameters(), lr=0.0, momentum=0.9, weight_decay=a.weight_decay)
    else:
        opt = torch.optim.SGD([{"params": regular, "lars": True}, {"params": excl, "lars": False}], lr=0.0,
                              momentum=0.9)
    t1, t2 = view(1.0, 0.0, a.crop_lo), view(0.1, 0.2, a.crop_lo)
    steps_per_epoch = len(data) // a.batch
    total = steps_per_epoch * a.epochs
    warm = round(0.1 * steps_per_epoch)
    peak = a.base_lr * a.batch / 256
    print(f"random init: kNN top-1 {knn(online['enc'], *bank):.2f}%", flush=True)
    step = 0
    g = torch.Generator().manual_seed(a.seed)
    for epoch in range(a.epochs):
        perm = torch.randperm(len(data), generator=g)
        for b in range(steps_per_epoch):
            imgs = data[perm[b * a.batch:(b + 1) * a.batch]]
            v1 = (torch.stack([t1(x) for x in imgs]) - MEAN) / STD
            v2 = (torch.stack([t2(x) for x in imgs]) - MEAN) / STD
            lr = peak * (step + 1) / warm if step < warm else peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
            tau = 1 - (1 - a.tau) * (math.cos(math.pi * step / total) + 1) / 2
            q1 = online["pred"](online["proj"](online["enc"](v1)))
            q2 = online["pred"](online["proj"](online["enc"](v2)))
            with torch.no_grad():
                z1 = target["proj"](target["enc"](v1))
                z2 = target["proj"](target["enc"](v2))
            loss = (2 - 2 * F.cosine_similarity(q1, z2).mean()) + (2 - 2 * F.cosine_similarity(q2, z1).mean())
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                if a.optimizer == "lars":
                    for p in regular:
                        p.grad.add_(p, alpha=1.5e-6)
                        pn, gn = p.norm(), p.grad.norm()
                        if pn > 0 and gn > 0:
                            p.grad.mul_(1e-3 * pn / gn)
            for gr in opt.param_groups:
                gr["lr"] = lr
            opt.step()
            with torch.no_grad():
                on = dict(online.named_parameters())
                for n, p in target.named_parameters():
                    p.mul_(tau).add_(on[n], alpha=1 - tau)
            step += 1
            if step % 10 == 0:
                print(f"step {step}/{total} loss {loss.item():.4f} lr {lr:.4f}", flush=True)
        print(f"epoch {epoch + 1}: kNN top-1 {knn(online['enc'], *bank):.2f}%", flush=True)


if __name__ == "__main__":
    main()
