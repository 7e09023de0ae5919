#!/usr/bin/env python3
"""Generates pil_resize.json: Pillow's bilinear `Image.resize` of RGB images, which torchvision's
`TF.resized_crop(pil_img, top, left, h, w, size=256)` calls after `img.crop` (COCO-Crop,
`data/create_coco-objects.py`).

Run with Pillow 10.4.0:  python3 gen_pil_resize.py > pil_resize.json
Pillow 10.x (like the Pillow of the official 2021 code) always resamples horizontally first; Pillow 13 picks
the pass order by shape, which can change pixels by 1 (e.g. 13x120 -> 5x77), so pin 10.4.0.
Images: seeded random RGB noise mixed with gradients (so both smooth and sharp content is covered).
"""
import base64
import json
import sys

import numpy as np
from PIL import Image

rng = np.random.RandomState(20261126)
cases = []
sizes = [((37, 23), (101, 63)), ((123, 77), (64, 40)), ((23, 37), (19, 31)), ((150, 101), (97, 64)),
         ((1, 5), (3, 7)), ((97, 61), (41, 29)), ((40, 40), (40, 40)), ((13, 120), (5, 77)),
         ((90, 60), (90, 33)), ((60, 90), (17, 90))]
for (w, h), (nw, nh) in sizes:
    yy, xx = np.mgrid[0:h, 0:w]
    grad = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    noise = rng.randint(0, 256, size=(h, w, 3))
    mix = rng.rand(h, w, 1) < 0.3
    img = np.where(mix, noise, grad).astype(np.uint8)
    out = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    cases.append({"w": w, "h": h, "nw": nw, "nh": nh,
                  "src": base64.b64encode(img.tobytes()).decode(),
                  "dst": base64.b64encode(out.tobytes()).decode()})
json.dump({"pillow": Image.__version__, "cases": cases}, sys.stdout, separators=(",", ":"))
