#!/usr/bin/env python3
"""Generates contours_cv2.json: OpenCV findContours(RETR_TREE, CHAIN_APPROX_SIMPLE) on random masks.

Run with opencv-python-headless 4.14.0.94 and numpy 2.4.6:  python3 gen_contours_cv2.py > contours_cv2.json
Masks: seeded random binary images (density varied), some smoothed so they contain blobs with holes.
"""
import json
import sys

import cv2
import numpy as np

rng = np.random.RandomState(20261126)
cases = []
for i in range(160):
    h, w = rng.randint(1, 24), rng.randint(1, 24)
    if i % 2 == 0:
        m = (rng.rand(h, w) < rng.uniform(0.2, 0.8)).astype(np.uint8)
    else:
        f = cv2.GaussianBlur(rng.rand(h, w), (0, 0), rng.uniform(0.7, 2.0))
        m = (f > np.quantile(f, rng.uniform(0.2, 0.8))).astype(np.uint8)
    contours, hier = cv2.findContours(m.copy(), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for k, c in enumerate(contours):
        pts = c.reshape(-1, 2).tolist()
        x, y, bw, bh = cv2.boundingRect(c)
        out.append({"points": pts, "parent": int(hier[0][k][3]), "rect": [x, y, bw, bh],
                    "area": float(cv2.contourArea(c))})
    cases.append({"h": h, "w": w, "mask": "".join(str(int(v)) for v in m.ravel()), "contours": out})
json.dump({"opencv": cv2.__version__, "cases": cases}, sys.stdout, separators=(",", ":"))
