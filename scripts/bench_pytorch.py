#!/usr/bin/env python3
"""PyTorch reference of the BYOL training step timed by `byol bench` (src/bench.rs).

One step = online(v1), online(v2) forwarded separately; target(v1), target(v2) under no_grad with
BatchNorm in train mode; loss = mean(2-2cos(q1, z2')) + mean(2-2cos(q2, z1')); backward; LARS as
src/lars.rs (wd 1.5e-6, trust 1e-3, momentum 0.9, lr 0.1; biases and BN params excluded from
wd/trust ratio); EMA target update tau=0.99 on parameters only. Inputs are random normal, made on
--device (cpu, or cuda for the GPU comparison).
Prints a markdown table with the same columns as `byol bench`.

Needs torch + torchvision (`pip install torch torchvision` in a venv); not part of CI.
"""
import argparse
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from torchvision.models.resnet import BasicBlock, ResNet
except ImportError:  # minimal torchvision-compatible fallback (same layout and names)
    BasicBlock = ResNet = None


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


def _make_layer(block, inplanes, planes, blocks, stride):
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


def resnet18(width, stem, in_channels):
    """torchvision ResNet-18 layout with first-stage width `width`, fc = Identity."""
    if ResNet is not None:
        net = ResNet(BasicBlock, [2, 2, 2, 2])
        block = BasicBlock
    else:
        net = nn.Module()
        net.relu = nn.ReLU(inplace=True)
        net.maxpool = nn.MaxPool2d(3, 2, 1)
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        block = _BasicBlock
    if stem == "cifar":
        net.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    inplanes = width
    for i, n in enumerate([2, 2, 2, 2]):
        layer, inplanes = _make_layer(block, inplanes, width << i, n, 1 if i == 0 else 2)
        setattr(net, f"layer{i + 1}", layer)
    net.fc = nn.Identity()
    if ResNet is None:
        def fwd(x, net=net):
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
            return torch.flatten(net.avgpool(x), 1)
        net.forward = fwd
    for m in net.modules():  # torchvision init
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net, inplanes


def mlp(in_dim, hidden, out):
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class Lars:
    """LARS exactly as src/lars.rs."""

    def __init__(self, named_params, momentum=0.9, weight_decay=1.5e-6, eta=1e-3):
        self.params = [(n, p, self._excluded(n, p)) for n, p in named_params]
        self.momentum, self.wd, self.eta = momentum, weight_decay, eta
        self.buf = {}

    @staticmethod
    def _excluded(name, p):
        return name.endswith(".bias") or p.ndim == 1  # biases and every BN weight/bias

    @torch.no_grad()
    def step(self, lr):
        for n, p, excl in self.params:
            if p.grad is None:
                continue
            g = p.grad
            if not excl:
                g = g + self.wd * p
                pn, gn = p.norm(), g.norm()
                ratio = torch.where((pn > 0) & (gn > 0), self.eta * pn / gn.clamp_min(1e-30),
                                    torch.ones_like(pn))
                g = g * ratio
            mu = self.buf.get(n)
            mu = g.clone() if mu is None else mu.mul_(self.momentum).add_(g)
            self.buf[n] = mu
            p.sub_(lr * mu)


def regression_loss(p, z):
    return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1)).mean()


def build_step(a, width, device="cpu"):
    """Online + target networks, LARS and the EMA on `device`; returns step(v1, v2) -> loss,
    one full BYOL step (forward both views through both networks, backward, LARS, EMA) that
    ends with the host holding the loss and a target weight (so the GPU has finished)."""
    torch.manual_seed(0)
    if a.depth == 18:
        enc, d = resnet18(width, a.stem, a.in_channels)
    else:  # torchvision ResNet-50 (bottleneck v1.5); width = first-stage channels, 64 = standard
        from torchvision.models.resnet import Bottleneck
        enc = ResNet(Bottleneck, {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[a.depth], width_per_group=width)
        enc.conv1 = nn.Conv2d(a.in_channels, 64, 7, 2, 3, bias=False) if a.in_channels != 3 else enc.conv1
        assert a.stem == "imagenet" and width == 64, "ResNet-50 reference: imagenet stem, width 64 only"
        d = enc.fc.in_features
        enc.fc = nn.Identity()
    online = nn.ModuleDict({"encoder": enc, "projector": mlp(d, a.hidden, a.out),
                            "predictor": mlp(a.out, a.hidden, a.out)}).to(device)
    target = nn.ModuleDict({"encoder": copy.deepcopy(online["encoder"]),
                            "projector": copy.deepcopy(online["projector"])})
    online.train()
    target.train()  # BN batch statistics in the target too
    for p in target.parameters():
        p.requires_grad_(False)
    opt = Lars(online.named_parameters())
    pairs = [(tp, dict(online.named_parameters())[n]) for n, tp in target.named_parameters()]

    def on(x):
        z = online["projector"](online["encoder"](x))
        return z, online["predictor"](z)

    def step(v1, v2):
        for p in online.parameters():
            p.grad = None
        z1, q1 = on(v1)
        _, q2 = on(v2)
        with torch.no_grad():
            t1 = target["projector"](target["encoder"](v1))
            t2 = target["projector"](target["encoder"](v2))
            _ = F.normalize(z1.detach(), dim=1).std(0).mean().item()  # collapse monitor, as byol
        loss = regression_loss(q1, t2) + regression_loss(q2, t1)
        loss.backward()
        value = loss.item()
        opt.step(a.lr)
        with torch.no_grad():
            for tp, op in pairs:
                tp.mul_(a.tau).add_(op, alpha=1 - a.tau)
        _ = target["encoder"].conv1.weight[0, 0, 0, 0].item()
        return value

    return step


def bench_case(a, width, batch):
    step = build_step(a, width, a.device)
    shape = (batch, a.in_channels, a.image_size, a.image_size)
    times = []
    for i in range(a.warmup + a.steps):
        v1, v2 = torch.randn(shape, device=a.device), torch.randn(shape, device=a.device)
        if a.device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step(v1, v2)
        if i >= a.warmup:
            times.append((time.perf_counter() - t) * 1e3)
    s = sorted(times)
    med = s[len(s) // 2]
    return med, batch / (med / 1e3), s[0]


def add_model_args(ap):
    """Model and step arguments shared with scripts/bench_pytorch_epoch.py."""
    ap.add_argument("--depth", type=int, default=18, choices=[18, 50, 101])
    ap.add_argument("--stem", default="cifar", choices=["cifar", "imagenet"])
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--out", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--tau", type=float, default=0.99)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap)
    ap.add_argument("--width", default="16,32,64")
    ap.add_argument("--batch", default="64,256")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    stem = {"cifar": "Cifar", "imagenet": "Imagenet"}[a.stem]
    if a.device != "cpu":
        print(f"# {torch.cuda.get_device_name()}, TF32 convolutions {torch.backends.cudnn.allow_tf32}, "
              f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}")
    print(f"| model | batch | image | ms/step (median of {a.steps}) | images/s | fastest ms |")
    print("|---|---|---|---|---|---|")
    for w in [int(x) for x in a.width.split(",")]:
        for b in [int(x) for x in a.batch.split(",")]:
            med, ips, fastest = bench_case(a, w, b)
            print(f"| pytorch resnet{a.depth}-{stem} w{w} | {b} | {a.image_size}px | {med:.1f} | {ips:.1f} | {fastest:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
