#!/usr/bin/env bash
# Parity tests need the known-answer vectors; CI must fail (not skip) when they are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${CONTRACAM_REFERENCE:-../shared/reference}"
for sub in contracam metrics kernels/crf kernels/objaware kernels/wsol kernels/lineval kernels/cocoapi; do
  if [ ! -d "$ref/$sub" ]; then
    echo "error: reference vectors not found at $ref/$sub." >&2
    echo "  Put the shared/ folder beside this checkout, or set CONTRACAM_REFERENCE to its reference/ path." >&2
    exit 1
  fi
done
