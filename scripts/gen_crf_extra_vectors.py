#!/usr/bin/env python3
"""Generates tests/data/pydensecrf2_extra.json: pydensecrf2 1.1 known answers for what the shared
kernels/crf vectors do not cover: non-square images (W != H), N not a multiple of 4 (the SSE padding lanes),
more than 2 labels (the SSE filter path), every normalisation type, and diagonal/matrix compatibilities.

    python3 -m venv /tmp/crf-venv && /tmp/crf-venv/bin/pip install numpy cython pydensecrf2
    /tmp/crf-venv/bin/python scripts/gen_crf_extra_vectors.py > tests/data/pydensecrf2_extra.json

Unaries are stored as float32 values, so the test does not depend on any log implementation.
"""
import json

import numpy as np
import pydensecrf.densecrf as dcrf

rng = np.random.default_rng(20211206)


def case(name, w, h, m, iters, terms, dark=False):
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4] = [200, 40, 30]  # a block, so the bilateral term matters
    if dark:
        # Features near the zero vector (but not at it): the SSE padding lanes' vertices join the blur.
        img = rng.integers(1, 6, size=(h, w, 3), dtype=np.uint8)
    logits = rng.normal(size=(m, h * w)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    unary = (-np.log(p)).astype(np.float32)
    d = dcrf.DenseCRF2D(w, h, m)
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    spec = []
    for t in terms:
        compat = t["compat"]
        c = compat if isinstance(compat, (int, float)) else np.array(compat, dtype=np.float32)
        norm = getattr(dcrf, t.get("norm", "NORMALIZE_SYMMETRIC"))
        if t["kind"] == "gaussian":
            d.addPairwiseGaussian(sxy=t["sxy"], compat=c, normalization=norm)
        else:
            d.addPairwiseBilateral(sxy=t["sxy"], srgb=t["srgb"], rgbim=img, compat=c, normalization=norm)
        spec.append(t)
    q = np.array(d.inference(iters), dtype=np.float32)
    return {
        "name": name,
        "W": w,
        "H": h,
        "M": m,
        "iters": iters,
        "terms": spec,
        "img_hwc": img.tolist(),
        "unary": unary.tolist(),
        "Q": q.tolist(),
    }


cases = [
    case("nonsquare_13x7_official_terms", 13, 7, 2, 5, [
        {"kind": "gaussian", "sxy": 3, "compat": 3},
        {"kind": "bilateral", "sxy": 80, "srgb": 13, "compat": 10},
    ]),
    case("nonsquare_6x11_small_sigmas", 6, 11, 2, 3, [
        {"kind": "gaussian", "sxy": 1.5, "compat": 2},
        {"kind": "bilateral", "sxy": 4, "srgb": 20, "compat": 5},
    ]),
    case("three_labels_9x6", 9, 6, 3, 4, [
        {"kind": "gaussian", "sxy": 2, "compat": 3},
        {"kind": "bilateral", "sxy": 5, "srgb": 15, "compat": 4},
    ]),
    case("padding_lanes_dark_5x3", 5, 3, 2, 3, [
        {"kind": "bilateral", "sxy": 1, "srgb": 2, "compat": 5},
    ], dark=True),
    case("normalizations_and_compat_10x5", 10, 5, 2, 3, [
        {"kind": "gaussian", "sxy": 2, "compat": [1.5, 2.5], "norm": "NORMALIZE_BEFORE"},
        {"kind": "bilateral", "sxy": 6, "srgb": 25, "compat": [[0.0, -2.0], [-1.0, 0.5]], "norm": "NORMALIZE_AFTER"},
        {"kind": "gaussian", "sxy": 4, "compat": 0.05, "norm": "NO_NORMALIZATION"},
    ]),
]
print(json.dumps({"generator": "scripts/gen_crf_extra_vectors.py", "pydensecrf2": "1.1", "seed": 20211206,
                  "cases": cases}))
