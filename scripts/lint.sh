#!/usr/bin/env bash
# Formatting and lints, as CI checks them: `cargo fmt --check` and clippy on every target with warnings as
# errors. Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
for c in rustfmt clippy; do
  if ! "$CARGO" "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      echo "[lint] installing the $c component (rustup component add $c)" >&2
      rustup component add "$c" >&2 || { echo "[lint] could not install $c; install it and re-run" >&2; exit 1; }
    else
      echo "[lint] cargo has no $c and there is no rustup to add it; install $c and re-run" >&2
      exit 1
    fi
  fi
done
"$CARGO" fmt --all -- --check || { echo "[lint] formatting differs: run 'cargo fmt'" >&2; exit 1; }
"$CARGO" clippy --release --locked --all-targets -- -D warnings
