#!/usr/bin/env python3
"""The PyTorch side of `contracam train bench`: the same MoCo v2 training step in plain PyTorch.

Same model (torchvision's ResNet-18 layout with a width multiplier and the small 3x3 stem option; the
official projector Linear(no bias) -> BN1d -> ReLU -> Linear, L2-normalised), the same batched colour
augmentations written in torch with Kornia 0.4.1's semantics (colour jitter with p 0.8, strength 0.5 and a
random op order per batch, grayscale p 0.2, Gaussian blur p 0.5 with sigma 0.1-2 and a kernel of 10% of the
side, ImageNet normalisation), the same MoCo step (momentum encoder updated at the start of the step, queue,
temperature 0.2, SGD momentum 0.9 with weight decay 1e-4 on every parameter), float32, the same threads.
`--precision bf16-mixed` runs the forward passes and the loss under torch.autocast(device, bfloat16) (as
contracam's `train.precision = "bf16-mixed"`: backward after the region, parameters, SGD, EMA and queue in
float32); `--channels-last` puts both models and the input views in torch.channels_last; `--device cuda`
runs on the GPU (the colour draws then come from the GPU's generator).

Loader excluded: views are fixed uint8 tensors made once. Loader included: a DataLoader with `--workers`
worker processes decoding the JPEGs listed in `--files` (Pillow), RandomResizedCrop(scale 0.08-1) + flip
twice per image as torchvision does (PIL bilinear resize).

Prints one JSON object: images, wall seconds, CPU seconds (getrusage of this process and its reaped
children, i.e. the loader workers), images/s by wall and by CPU time.
"""
import argparse
import json
import math
import random
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def cpu_seconds():
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Basic(nn.Module):
    def __init__(self, cin, c, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.down = None
        if stride != 1 or cin != c:
            self.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        # In place as torchvision's BasicBlock (ReLU(inplace=True), `out += identity`), which the official
        # code trains.
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        y += x if self.down is None else self.down(x)
        return F.relu(y, inplace=True)


class ResNet18(nn.Module):
    def __init__(self, width, small):
        super().__init__()
        w = max(1, round(64 * width))
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False) if small else nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.pool = not small
        self.bn1 = nn.BatchNorm2d(w)
        layers, cin = [], w
        for i, c in enumerate([w, 2 * w, 4 * w, 8 * w]):
            stride = 1 if i == 0 else 2
            layers += [Basic(cin, c, stride), Basic(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.dim = cin

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        if self.pool:
            x = F.max_pool2d(x, 3, 2, 1)
        return self.layers(x).mean((2, 3))


class Net(nn.Module):
    def __init__(self, width, small, out=128):
        super().__init__()
        self.encoder = ResNet18(width, small)
        d = self.encoder.dim
        self.projector = nn.Sequential(nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(), nn.Linear(d, out))

    def forward(self, x):
        return F.normalize(self.projector(self.encoder(x)), dim=1)


# ---- Kornia 0.4.1 colour ops, batched ----------------------------------------------------------------------


def gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def rgb_to_hsv(x):
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc, argmax = x.max(1)
    minc = x.min(1)[0]
    v = maxc
    delta = maxc - minc
    s = delta / (v + 1e-8)
    delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = maxc - r, maxc - g, maxc - b
    h = torch.stack([bc - gc, 2.0 * delta + rc - bc, 4.0 * delta + gc - rc], 1)
    h = torch.gather(h, 1, argmax.unsqueeze(1)).squeeze(1) / delta
    h = (h / 6.0) % 1.0
    return torch.stack([2 * math.pi * h, s, v], 1)


def hsv_to_rgb(x):
    h, s, v = x[:, 0] / (2 * math.pi), x[:, 1], x[:, 2]
    hi = torch.floor(h * 6) % 6
    f = ((h * 6) % 6) - hi
    one = torch.tensor(1.0)
    p, q, t = v * (one - s), v * (one - f * s), v * (one - (one - f) * s)
    hi = hi.long()
    idx = torch.stack([hi, hi + 6, hi + 12], 1)
    out = torch.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q), 1)
    return torch.gather(out, 1, idx)


def jitter(x, rng, strength=0.5):
    n, dev = x.shape[0], x.device
    b = torch.empty(n, device=dev).uniform_(1 - 0.8 * strength, 1 + 0.8 * strength).view(n, 1, 1, 1)
    c = torch.empty(n, device=dev).uniform_(1 - 0.8 * strength, 1 + 0.8 * strength).view(n, 1, 1, 1)
    s = torch.empty(n, device=dev).uniform_(1 - 0.8 * strength, 1 + 0.8 * strength).view(n, 1, 1, 1)
    hshift = torch.empty(n, device=dev).uniform_(-0.2 * strength, 0.2 * strength).view(n, 1, 1) * 2 * math.pi
    ops = [0, 1, 2, 3]
    rng.shuffle(ops)
    for op in ops:
        if op == 0:
            x = (x * b).clamp(0, 1)
        elif op == 1:
            x = (x * c).clamp(0, 1)
        elif op == 2:
            hsv = rgb_to_hsv(x)
            hsv[:, 1] = (hsv[:, 1] * s[:, 0]).clamp(0, 1)
            x = hsv_to_rgb(hsv)
        else:
            hsv = rgb_to_hsv(x)
            hsv[:, 0] = (hsv[:, 0] + hshift) % (2 * math.pi)
            x = hsv_to_rgb(hsv)
    return x


def blur(x, sigmas, k):
    n = x.shape[0]
    r = torch.arange(k, dtype=torch.float32, device=x.device) - k // 2
    g = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigmas.view(-1, 1) ** 2))
    g = g / g.sum(1, keepdim=True)
    gx = g.repeat_interleave(3, 0).view(3 * n, 1, 1, k)
    gy = g.repeat_interleave(3, 0).view(3 * n, 1, k, 1)
    y = x.reshape(1, 3 * n, *x.shape[2:])
    y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), gx, groups=3 * n)
    y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), gy, groups=3 * n)
    return y.view_as(x)


def subset(x, mask, f):
    idx = mask.nonzero().flatten()
    if idx.numel() == 0:
        return x
    x = x.clone()
    x[idx] = f(x[idx], idx)
    return x


def augment(x, rng):
    n, size, dev = x.shape[0], x.shape[-1], x.device
    k = int(0.1 * size)
    k = k + 1 if k % 2 == 0 else k
    x = subset(x, torch.rand(n, device=dev) < 0.8, lambda t, _: jitter(t, rng))
    x = subset(x, torch.rand(n, device=dev) < 0.2, lambda t, _: gray(t).expand(-1, 3, -1, -1))
    sig = torch.empty(n, device=dev).uniform_(0.1, 2.0)
    x = subset(x, torch.rand(n, device=dev) < 0.5, lambda t, i: blur(t, sig[i], k))
    return (x - MEAN.to(dev)) / STD.to(dev)


# ---- the loader ----------------------------------------------------------------------------------------------


class JpegViews(torch.utils.data.Dataset):
    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def view(self, img):
        from PIL import Image

        w, h = img.size
        area = w * h
        for _ in range(10):
            a = area * random.uniform(0.08, 1.0)
            ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = int(round(math.sqrt(a * ratio))), int(round(math.sqrt(a / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                i, j = random.randint(0, h - ch), random.randint(0, w - cw)
                break
        else:
            cw, ch, i, j = w, h, 0, 0
        v = img.crop((j, i, j + cw, i + ch)).resize((self.size, self.size), Image.BILINEAR)
        if random.random() < 0.5:
            v = v.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.frombuffer(bytearray(v.tobytes()), dtype=torch.uint8).view(self.size, self.size, 3).permute(2, 0, 1)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.open(self.files[i]).convert("RGB")
        return self.view(img), self.view(img)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, required=True)
    ap.add_argument("--small-stem", action="store_true")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--files", help="a list of JPEG paths, one a line: include the loader")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--precision", choices=["fp32", "bf16-mixed"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    online = Net(a.width, a.small_stem).to(dev, memory_format=fmt)
    target = Net(a.width, a.small_stem).to(dev, memory_format=fmt)
    target.load_state_dict(online.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    queue = F.normalize(torch.randn(a.queue, 128, device=dev), dim=1)
    bf16 = a.precision == "bf16-mixed"

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    ptr = 0
    opt = torch.optim.SGD(online.parameters(), lr=0.03 * a.batch / 256, momentum=0.9, weight_decay=1e-4)
    pairs = [(t, o) for t, o in zip(target.parameters(), online.parameters())]

    def step(v1, v2):
        nonlocal queue, ptr
        x1 = augment(v1.to(dev).float() / 255, rng)
        x2 = augment(v2.to(dev).float() / 255, rng)
        with torch.no_grad():
            for t, o in pairs:
                t.lerp_(o, 1 - 0.999)
        x1, x2 = x1.contiguous(memory_format=fmt), x2.contiguous(memory_format=fmt)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                k = target(x2)
            q = online(x1)
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.t()], 1) / 0.2
            loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=dev))
        loss = loss.float()
        opt.zero_grad()
        loss.backward()
        opt.step()
        n = k.shape[0]
        idx = (torch.arange(n, device=dev) + ptr) % a.queue
        queue[idx] = k.float()
        ptr = (ptr + n) % a.queue
        return loss.item()

    total = a.warmup + a.steps
    if a.files:
        files = [line.strip() for line in open(a.files) if line.strip()]
        ds = JpegViews(files, a.size)
        dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, drop_last=True,
                                         num_workers=a.workers, prefetch_factor=2 if a.workers else None)
        batches = (b for _ in range(10 ** 6) for b in dl)
    else:
        g = torch.Generator().manual_seed(1)
        fixed = [torch.randint(0, 256, (a.batch, 3, a.size, a.size), dtype=torch.uint8, generator=g) for _ in range(2)]
        batches = (fixed for _ in range(total))
    online.train()
    target.train()
    for _ in range(a.warmup):
        v1, v2 = next(batches)
        step(v1, v2)
    sync()
    t, c = time.perf_counter(), cpu_seconds()
    for _ in range(a.steps):
        v1, v2 = next(batches)
        step(v1, v2)
    sync()
    del batches
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    n = a.steps * a.batch
    print(json.dumps({"images": n, "wall_s": wall, "cpu_s": cpu, "img_s": n / wall, "img_per_cpu_s": n / cpu}))


if __name__ == "__main__":
    main()
