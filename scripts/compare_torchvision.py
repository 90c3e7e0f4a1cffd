#!/usr/bin/env python3
"""Check that a `byol export` encoder computes the same representations in torchvision.

Needs PyTorch, torchvision, numpy and safetensors (not run in CI). Steps:

    byol export --checkpoint RUN --output enc.safetensors
    byol embed  --checkpoint RUN --dataset fashion-mnist --limit 256 \
                --output emb.npy --dump-inputs inputs.npy
    python scripts/compare_torchvision.py enc.safetensors inputs.npy emb.npy

The encoder is torchvision's ResNet (BasicBlock/Bottleneck, `_make_layer`) with the stage
width and input channels of the export; the CIFAR stem replaces conv1 by a 3x3 stride-1
convolution and the max-pool by Identity; fc = Identity, so the output is the pooled
representation y (BYOL paper §3.3). `inputs.npy` holds byol's preprocessed images
([n, C*H*W], evaluation transform, normalised), so both sides embed identical tensors.
Prints the max absolute difference; exits 1 when it exceeds --tol.
"""

import argparse
import math
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

LAYOUTS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
    200: (Bottleneck, [3, 24, 36, 3]),
}


class ByolResNet(ResNet):
    """torchvision's ResNet with a configurable first-stage width, input channels and stem."""

    def __init__(self, depth, width, in_channels, stem):
        nn.Module.__init__(self)
        block, layers = LAYOUTS[depth]
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()


def parse_arch(spec):
    kv = dict(p.split("=", 1) for p in spec.split(",") if p)
    return int(kv["depth"]), int(kv["width"]), int(kv["in_channels"]), kv["stem"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("encoder", help="byol export --what encoder output (.safetensors)")
    ap.add_argument("inputs", help="byol embed --dump-inputs output (.npy)")
    ap.add_argument("embeddings", help="byol embed --output (.npy)")
    ap.add_argument("--arch", help="depth=..,width=..,stem=..,in_channels=.. (default: the file's metadata)")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()

    with safe_open(args.encoder, framework="pt") as f:
        meta = f.metadata() or {}
    spec = args.arch or meta.get("arch")
    if not spec:
        sys.exit(f"{args.encoder}: no arch metadata; pass --arch")
    depth, width, in_ch, stem = parse_arch(spec)
    model = ByolResNet(depth, width, in_ch, stem)
    state = {k: v for k, v in load_file(args.encoder).items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()

    x = np.load(args.inputs)
    side = math.isqrt(x.shape[1] // in_ch)
    x = torch.from_numpy(x).reshape(-1, in_ch, side, side)
    want = np.load(args.embeddings)
    with torch.no_grad():
        got = model(x).numpy()
    if got.shape != want.shape:
        sys.exit(f"shape mismatch: torchvision {got.shape}, byol {want.shape}")
    diff = np.abs(got - want).max()
    scale = np.abs(want).max()
    print(f"arch {spec}; {got.shape[0]} images, dim {got.shape[1]}")
    print(f"max |torchvision - byol| = {diff:.3e}  (max |y| = {scale:.3e}, relative {diff / max(scale, 1e-12):.3e})")
    sys.exit(0 if diff <= args.tol * max(1.0, scale) else 1)


if __name__ == "__main__":
    main()
