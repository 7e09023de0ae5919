#!/usr/bin/env python3
"""Baseline for `cargo bench --bench crf`: pydensecrf2 running the object-aware `apply_crf` recipe.

Not needed by any test. Set up a scratch venv first:
    python3 -m venv /tmp/crf-venv && /tmp/crf-venv/bin/pip install numpy cython pydensecrf2 safetensors
    /tmp/crf-venv/bin/python scripts/bench_pydensecrf.py [--reps 5] [--check]

Inputs are the 8 setting-(c) images and CAMs of the ContraCAM reference set ($CONTRACAM_REFERENCE or
../shared/reference). Prints per-image wall and CPU time on one thread and the throughput of one process
per core, as the environment variables the Rust bench reads (PYDENSECRF_MS_PER_IMAGE,
PYDENSECRF_CPU_MS_PER_IMAGE, PYDENSECRF_MS_PER_IMAGE_ALL_CORES).
--check also compares against the stored official output (expected: identical).
"""
import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import pydensecrf.densecrf as dcrf
from safetensors.numpy import load_file


def apply_crf(image, cam):
    """utils/box_utils.py: apply_crf for one image (square, so (h, w) vs (w, h) does not matter)."""
    h, w = cam.shape[-2:]
    mask = np.concatenate([cam, 1 - cam], axis=0).reshape((2, -1))
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(-np.log(mask + 1e-20))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=image, compat=10)
    q = d.inference(5)
    return np.array(q).reshape((2, h, w))[0]


def load():
    ref = os.environ.get("CONTRACAM_REFERENCE") or os.path.join(os.path.dirname(__file__), "../../shared/reference")
    t = load_file(os.path.join(ref, "contracam/contracam_r18_vectors.safetensors"))
    return np.ascontiguousarray(t["input_uint8"]), np.ascontiguousarray(t["cam_c_er2_it10"]), t["c_crf_prob"]


def _worker(args):
    images, cams, idx = args
    for i in idx:
        apply_crf(images[i % len(images)], cams[i % len(cams)])
    return len(idx)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    images, cams, expected = load()
    n = len(images)
    if a.check:
        out = np.stack([apply_crf(images[i], cams[i]) for i in range(n)])
        print(f"max |pydensecrf2 - stored official| = {np.abs(out - expected[:, 0]).max():.3g}")
    apply_crf(images[0], cams[0])
    best_wall = best_cpu = float("inf")
    for _ in range(a.reps):
        t, c = time.perf_counter(), time.process_time()
        for i in range(n):
            apply_crf(images[i], cams[i])
        best_wall = min(best_wall, (time.perf_counter() - t) * 1e3 / n)
        best_cpu = min(best_cpu, (time.process_time() - c) * 1e3 / n)
    cores = os.cpu_count() or 1
    total = n * cores * 4
    chunks = [(images, cams, list(range(k, total, cores))) for k in range(cores)]
    best_multi = float("inf")
    with mp.Pool(cores) as pool:
        for _ in range(max(1, a.reps // 2)):
            t = time.perf_counter()
            pool.map(_worker, chunks)
            best_multi = min(best_multi, (time.perf_counter() - t) * 1e3 / total)
    print(f"pydensecrf2, official recipe, 224x224, {n} images")
    print(f"  1 thread : {best_wall:.3f} ms/image wall, {best_cpu:.3f} ms/image CPU")
    print(f"  {cores} processes: {best_multi:.3f} ms/image (throughput)")
    print(
        f"PYDENSECRF_MS_PER_IMAGE={best_wall:.3f} PYDENSECRF_CPU_MS_PER_IMAGE={best_cpu:.3f} "
        f"PYDENSECRF_MS_PER_IMAGE_ALL_CORES={best_multi:.3f}"
    )


if __name__ == "__main__":
    main()
