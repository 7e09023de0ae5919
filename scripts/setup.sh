#!/usr/bin/env bash
# One-time set-up for contracam on Debian/Ubuntu: system packages, Rust, and libtorch 2.11.0 from the PyPI torch
# wheel in a project-local virtualenv (.venv). Idempotent: a finished set-up is recorded in .venv/.contracam-ok
# and re-running only re-checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
# numpy only for tests that load pickles with numpy arrays (the detectron2 export against the official converter).
NUMPY_VERSION=2.3.5
VENV=.venv
STAMP="$VENV/.contracam-ok"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

need_apt=()
command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 || need_apt+=(build-essential)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v curl >/dev/null 2>&1 || need_apt+=(curl ca-certificates)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" \
    || die "could not install ${need_apt[*]}; install them by hand and re-run"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    say "installing the Rust toolchain with rustup (stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
      || die "rustup failed; install Rust (https://rustup.rs) and re-run"
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

torch_ok() {
  [ -f "$VENV/libtorch/lib/libtorch_cpu.so" ] || return 1
  local v
  v=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null) || return 1
  case "$v" in "$TORCH_VERSION"|"$TORCH_VERSION"+*) return 0 ;; *) return 2 ;; esac
}

numpy_ok() { "$VENV/bin/python" -c "import numpy; assert numpy.__version__ == '$NUMPY_VERSION'" >/dev/null 2>&1; }

if [ -f "$STAMP" ] && torch_ok && numpy_ok; then
  exit 0
fi

if [ -d "$VENV" ] && [ -x "$VENV/bin/python" ]; then
  set +e; torch_ok; rc=$?; set -e
  if [ $rc -eq 2 ]; then
    have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')
    die "$VENV has torch $have but contracam needs torch==$TORCH_VERSION (tch 0.24 is built for it).
  Fix: rm -rf $VENV && make setup   (or: $VENV/bin/pip install torch==$TORCH_VERSION)"
  fi
else
  say "creating virtualenv $VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
fi

say "installing torch==$TORCH_VERSION from PyPI into $VENV (about 4.6 GB with its CUDA runtime libraries)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" \
  || die "pip install torch==$TORCH_VERSION failed; check network access to PyPI and free disk space (~5 GB)"

"$VENV/bin/python" -m pip install -q --disable-pip-version-check "numpy==$NUMPY_VERSION" \
  || die "pip install numpy==$NUMPY_VERSION failed; check network access to PyPI"

site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -f "$site/torch/lib/libtorch_cpu.so" ] || die "torch installed but $site/torch/lib/libtorch_cpu.so is missing"
# A fixed path for .cargo/config.toml's LIBTORCH, whatever the python minor version.
venv_abs=$(cd "$VENV" && pwd)
ln -sfn "${site#"$venv_abs"/}/torch" "$VENV/libtorch"
set +e; torch_ok; rc=$?; set -e
[ $rc -eq 0 ] || die "torch in $VENV is not $TORCH_VERSION after install; rm -rf $VENV and re-run"
touch "$STAMP"
say "libtorch $TORCH_VERSION ready at $VENV/libtorch"
