#!/usr/bin/env bash
# One-off GPU check on a machine with PyTorch 2.11 (cu130) but no Rust, in well under 8 minutes: run from the
# repository root with the folder from scripts/gpu-check-pack.sh at gpu-check/. Records, under $OUT (or
# gpu-check-out/): the environment; NCCL on this machine's GPU(s) (the data-parallel MoCo/BYOL steps against
# one process, tests/distributed.rs); ContraCAM on the GPU against the official code's CAMs (reference
# setting `a`, atol 1e-4 as the CPU parity test); the training wall time and img/s of the smoke suite's
# training on the GPU; the smoke suite's wall time on the GPU. Exit 1 when a check failed.
#   TORCH_PY  the Python with torch (default /opt/torch/.venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
pack=${PACK:-gpu-check}
out=${OUT:-gpu-check-out}
py=${TORCH_PY:-/opt/torch/.venv/bin/python}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
LD_LIBRARY_PATH=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH
status=0
report="$out/gpu-check.md"
step() { # name, timeout seconds, command...: runs it, logs, times, records pass/FAIL in the report
  local name=$1 limit=$2; shift 2
  local t0 rc
  t0=$(date +%s%N)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ $rc -eq 0 ] || status=1
  printf '| %s | %s | %d.%03d |\n' "$name" "$([ $rc -eq 0 ] && echo pass || echo "FAIL ($rc)")" \
    $((ms / 1000)) $((ms % 1000)) >> "$report"
}
{
  echo "# contracam GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/GPU: /'
  echo "torch: $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
  echo "cpu: $(nproc) cores; loadavg $(cat /proc/loadavg)"
  echo
  echo "| check | result | seconds |"
  echo "|---|---|---|"
} > "$report"
"$pack/contracam" env --device cuda > "$out/environment.txt" 2>&1 || status=1

step nccl_data_parallel 180 "$pack/distributed" moco_and_byol_steps_over_nccl_on_cuda --exact \
  --include-ignored --nocapture --test-threads 1
gunzip -c "$pack/weights.safetensors.gz" > "$tmp/weights.safetensors"
step cam_on_gpu 120 "$pack/contracam" localize cam --quiet --device cuda --weights "$tmp/weights.safetensors" \
  --inputs "$pack/cam_parity.safetensors" --input-key images --out "$tmp/cam.safetensors"
step cam_parity 60 "$py" scripts/gpu_check_tensors.py compare "$tmp/cam.safetensors" \
  "$pack/cam_parity.safetensors" cam 1e-4
step train_smoke_gpu 240 "$pack/contracam" train ssl --quiet --device cuda --suite suites/smoke.toml \
  --out "$tmp/model.safetensors"
step suite_smoke_gpu 300 "$pack/contracam" suite run --quiet suites/smoke.toml --device cuda \
  --runs-dir "$tmp/runs" --out "$out/smoke.results.json"
{
  echo
  echo "CAM parity: $(tail -1 "$out/cam_parity.log")"
  echo "NCCL: $(grep -E 'NCCL over|max \|Δ\|' "$out/nccl_data_parallel.log" | tr '\n' ';')"
  echo "Training (smoke suite's [train] on cuda): $(grep -iE 'img/s|images/s|steps' "$out/train_smoke_gpu.log" | tail -1)"
} >> "$report"
cat "$report"
exit $status
