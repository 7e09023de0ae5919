#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has PyTorch but no Rust (under 64 MiB): the
# stripped CUDA release binaries (the launcher and contracam-torch), the data-parallel test binary of the
# CUDA build, the ContraCAM reference weights (gzip) and the inputs and expected CAMs of the reference's
# setting `a` (expand_res 1, 1 iteration).
# Run here after `make build-cuda`; carry the folder (default gpu-check/) to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
ref=${CONTRACAM_REFERENCE:-../shared/reference}/contracam
mkdir -p "$out"
cargo build --release --locked --features cuda
./target/release/contracam env | grep -q 'cuda linked *true' \
  || { echo "target/release/contracam is not the CUDA build" >&2; exit 1; }
# The launcher execs contracam-torch from its own folder for every torch command: both go.
strip -o "$out/contracam" target/release/contracam
strip -o "$out/contracam-torch" target/release/contracam-torch
test_bin=$(cargo test --release --locked --features cuda --test distributed --no-run 2>&1 \
  | grep -o 'target/release/deps/distributed-[0-9a-f]*' | tail -1)
strip -o "$out/distributed" "$test_bin"
gzip -1 -c "$ref/contracam_r18_weights.safetensors" > "$out/weights.safetensors.gz"
.venv/bin/python scripts/gpu_check_tensors.py subset "$ref/contracam_r18_vectors.safetensors" \
  "$out/cam_parity.safetensors" images=input_uint8 cam=cam_a_er1_it1
du -sh "$out"
