#!/usr/bin/env python3
"""The PyTorch side of `contracam localize bench`: the official ContraCAM in plain PyTorch.

`GradCAM` below is the official `utils/gradcam.py` of github.com/alinlab/object-aware-contrastive (commit
5a5668f4a1b10777dc69887df60724fd5fc6af22), copied verbatim for the contrastive path (`_expand_res`,
`get_features`, `get_projection`, `forward`, `get_contrastive_cam`, `_contrastive_score`, `_compute_cam`,
`normalize`); the supervised CAM and the OpenCV overlay are left out (not on this path, and cv2 is not in the
project's .venv). It is driven the way `inference.py::compute_masks` / `utils/utils.py::collect_outputs` drive
it: `model(x.to(device), score_type='con', n_iters=T).cpu()` per batch, the model in eval mode.

The encoder is torchvision's ResNet-18/50 layout (torchvision is not in the .venv, so `BasicBlock`,
`Bottleneck` and `ResNet` are re-typed here after torchvision/models/resnet.py: the same module names and
forward), with a width multiplier and the official small-input stem (`models/base.py::load_backbone` for
image_size 32: a 3x3/1 conv1 and `maxpool = Identity`); the projector is the official
`models/base.py::load_projection` (copied). Weights come from the safetensors file contracam writes
(`encoder.*`, `projector.*`), read by a few lines below (the .venv has no `safetensors` package), and load
strictly.

Input: `--images`, float32 (N, 3, H, W) ImageNet-normalised, in batches of `--batch` (N = batch x steps).
Output: one JSON object on stdout (images, wall and CPU seconds from getrusage, images/s); with
`--cams-out`, the CAMs of the first timed batch as safetensors (`cam`, float32 (B, 1, H, W)) for the
agreement check.

CONTRACAM_BENCH_PERTURB changes one setting on purpose (for the test that the agreement check catches a
different computation): `iters` runs one iteration fewer, `no-clamp` keeps negative weights.
"""
import argparse
import json
import os
import resource
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def cpu_seconds():
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime


# ---- safetensors, the few lines this needs -------------------------------------------------------------------

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        buf = bytearray(data[base + start:base + end])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if buf else torch.empty(0, dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out, metadata


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = t.contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- torchvision's ResNet layout (torchvision/models/resnet.py), with a width multiplier -------------------


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # stride on the 3x3 (torchvision v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, layers, width=1.0, small_stem=False):
        super().__init__()
        w = max(1, round(64 * width))
        self.inplanes = w
        if small_stem:  # models/base.py::load_backbone, image_size 32
            self.conv1 = nn.Conv2d(3, w, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, w, layers[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * w, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * w, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()  # models/base.py::load_backbone
        self.feat_dim = 8 * w * block.expansion

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)


# ---- models/base.py (official), copied -------------------------------------------------------------------------


def load_projection(n_in, n_hidden, n_out, num_layers=2, last_bn=False):
    layers = []
    for i in range(num_layers - 1):
        layers.append(nn.Linear(n_in, n_hidden, bias=False))
        layers.append(nn.BatchNorm1d(n_hidden))
        layers.append(nn.ReLU())
        n_in = n_hidden
    layers.append(nn.Linear(n_hidden, n_out, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(Lambda(F.normalize))  # normalize projection
    projection = nn.Sequential(*layers)
    return projection


class Lambda(nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func = func

    def forward(self, x):
        return self.func(x)


# ---- utils/gradcam.py (official), copied; the contrastive path only ------------------------------------------

PERTURB = os.environ.get("CONTRACAM_BENCH_PERTURB", "")
CLAMP = PERTURB != "no-clamp"  # official: True (set False by --no-negative-removal too)


class GradCAM(nn.Module):
    def __init__(self, encoder, classifier=None, projector=None, expand_res=1):
        super().__init__()
        self.encoder = self._expand_res(encoder, expand_res=expand_res)
        self.classifier = classifier
        self.projector = projector
        self.eval()

    def _expand_res(self, encoder, expand_res=1):
        """Expand resolution of penultimate feature"""
        assert expand_res in [1, 2, 4]

        def _reduce_stride(module):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    m.stride = (1, 1)

        if expand_res >= 2:
            _reduce_stride(encoder.layer4[0])
        if expand_res >= 4:
            _reduce_stride(encoder.layer3[0])

        return encoder

    def get_features(self, x):
        with torch.no_grad():
            x = self.encoder.conv1(x)
            x = self.encoder.bn1(x)
            x = self.encoder.relu(x)
            x = self.encoder.maxpool(x)
            x = self.encoder.layer1(x)
            x = self.encoder.layer2(x)
            x = self.encoder.layer3(x)
            x = self.encoder.layer4(x)
        return x

    def get_projection(self, x):
        x = self.encoder.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.projector(x)
        return x

    def forward(self, image, score_type='con', **kwargs):
        if score_type == 'con':
            cam = self.get_contrastive_cam(image, **kwargs)
        else:
            raise ValueError
        return cam

    def get_contrastive_cam(self, image, n_iters=1, return_intermediate=False):
        b, c, h, w = image.size()
        image_original = image
        mask_color = image.mean(dim=(0, 2, 3), keepdim=True)

        key, queues = None, []
        _masks, _masked_images = [], []
        for it in range(n_iters):
            feature = self.get_features(image)
            feature.requires_grad = True
            output = self.get_projection(feature)

            if it == 0:
               key = output.detach()  # original images
            queues.append(output.detach())  # masked images

            score = self._contrastive_score(output, key, queues)
            cam = self._compute_cam(feature, score, size=(h, w),
                                    clamp_negative_weights=CLAMP)  # official: True

            mask = torch.max(mask, cam) if it > 0 else cam  # union over iterations
            image = image_original * (1 - mask) + mask_color * mask

            _masks.append(cam)
            _masked_images.append(image)

        if return_intermediate:
            return mask, (_masks, _masked_images)
        else:
            return mask

    def _contrastive_score(self, query, key, queues):
        eye = torch.eye(query.size(0)).type_as(query)
        pos = torch.einsum('nc,nc->n', [query, key]).unsqueeze(0)
        neg = torch.cat([torch.einsum('nc,kc->nk', [query, queue]) * (1 - eye) for queue in queues], dim=1)
        score = (pos.exp().sum(dim=1) / neg.exp().sum(dim=1)).log()
        return score

    def _compute_cam(self, feature, score, size=(224, 224), clamp_negative_weights=True):
        grad = torch.autograd.grad(score.sum(), feature)[0]

        weight = F.adaptive_avg_pool2d(grad, output_size=(1, 1))
        if clamp_negative_weights:  # positive weights only
            weight = weight.clamp_min(0)

        cam = torch.sum(weight * feature, dim=1, keepdim=True).detach()

        cam = F.relu(cam)  # positive values only (follow Grad-CAM)
        cam = F.interpolate(cam, size=size, mode='bicubic', align_corners=False)
        cam = GradCAM.normalize(cam)

        return cam

    @staticmethod
    def normalize(cam, eps=1e-20):
        cam = cam.clone()
        for i in range(cam.size(0)):
            cam[i] -= torch.min(cam[i])
            cam[i] /= (torch.max(cam[i]) + eps)
        return cam


# ---- the benchmark ---------------------------------------------------------------------------------------------


class Net(nn.Module):
    """`encoder` + `projector` under the names of the official Lightning state dict."""

    def __init__(self, arch, width, small_stem, proj_hidden, proj_dim):
        super().__init__()
        if arch == "resnet18":
            self.encoder = ResNet(BasicBlock, [2, 2, 2, 2], width, small_stem)
        else:
            self.encoder = ResNet(Bottleneck, [3, 4, 6, 3], width, small_stem)
        d = self.encoder.feat_dim
        self.projector = load_projection(d, proj_hidden or d, proj_dim)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True, help="contracam checkpoint (safetensors)")
    ap.add_argument("--images", required=True, help="safetensors with float32 (N, 3, H, W) normalised images")
    ap.add_argument("--images-key", default="images")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, default=1, help="timed batches (N >= batch x steps)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--expand-res", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed one-iteration CAMs of the first batch before timing (the same shapes)")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-negative-removal", action="store_true", help="Table 1's 'w/o negative signal removal'")
    ap.add_argument("--cams-out", help="write the first timed batch's CAMs here (safetensors, `cam`)")
    a = ap.parse_args()
    global CLAMP
    CLAMP = CLAMP and not a.no_negative_removal
    torch.set_num_threads(a.threads)
    iters = a.iters
    if PERTURB == "iters":
        iters -= 1
    if PERTURB:
        print(f"bench_contracam_pytorch.py: CONTRACAM_BENCH_PERTURB={PERTURB}: NOT the official computation",
              file=sys.stderr)

    tensors, metadata = read_safetensors(a.weights)
    meta = json.loads(metadata["contracam.model"])
    if meta.get("projector_form", "bn") != "bn" or meta["method"] != "moco":
        sys.exit(f"{a.weights}: only MoCo models with the official projector are benchmarked")
    net = Net(meta["arch"], meta.get("width", 1.0), meta.get("stem", "imagenet") == "small",
              meta.get("proj_hidden"), meta.get("proj_dim") or 128)
    net.load_state_dict(tensors, strict=True)
    device = torch.device(a.device)
    net.to(device)
    model = GradCAM(net.encoder, projector=net.projector, expand_res=a.expand_res)

    images = read_safetensors(a.images)[0][a.images_key]
    if images.shape[0] < a.batch * a.steps:
        sys.exit(f"{a.images}: {images.shape[0]} images, need batch x steps = {a.batch * a.steps}")
    batches = [images[s * a.batch:(s + 1) * a.batch] for s in range(a.steps)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(a.warmup):
        model(batches[0].to(device), score_type='con', n_iters=1).cpu()
    sync()
    t, c = time.perf_counter(), cpu_seconds()
    first = None
    for x in batches:
        out = model(x.to(device), score_type='con', n_iters=iters).cpu()  # utils/utils.py::collect_outputs
        if first is None:
            first = out
    sync()
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    if a.cams_out:
        write_safetensors(a.cams_out, {"cam": first})
    n = a.steps * a.batch
    print(json.dumps({"images": n, "wall_s": wall, "cpu_s": cpu, "img_s": n / wall, "img_per_cpu_s": n / cpu}))


if __name__ == "__main__":
    main()
