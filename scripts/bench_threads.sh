#!/bin/bash
# Threads on a shared machine, measured: the smoke suite's MoCo pretraining (2 epochs = 24 steps) run quiet and
# beside busy processes, at the default thread count and at forced ones, with libgomp's default wait policy
# and with OMP_WAIT_POLICY=PASSIVE. Prints one table row per run (wall, user + system CPU, the thread count the
# run chose); README "Threads on a shared machine" holds the figures.
#
#   scripts/bench_threads.sh [BIN] [BUSY]     BIN default target/release/contracam; BUSY = busy processes
#                                              for the loaded half (default 1)
# The loaded half waits 70 s after starting the busy processes, so the 1-minute load average that the default
# thread count reads has caught up with them.
set -euo pipefail
bin=${1:-target/release/contracam}
busy=${2:-1}
work=$(mktemp -d)
trap 'kill ${pids:-} 2>/dev/null || true; rm -rf "$work"' EXIT
sed -e 's/^epochs = 5$/epochs = 2/' -e 's#^golden = .*##' suites/smoke.toml > "$work/smoke24.toml"
grep -q '^epochs = 2$' "$work/smoke24.toml" || { echo "suites/smoke.toml: [train] epochs line not found" >&2; exit 1; }

run() { # label, env..., -- args...
    local label=$1; shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    local t0 t1
    /usr/bin/time -f "%e %U %S" -o "$work/time" env "${envs[@]}" "$bin" train ssl --suite "$work/smoke24.toml" \
        --out "$work/m.safetensors" --quiet "$@" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
    read -r wall user sys < "$work/time"
    local chose
    chose=$("$bin" env "$@" 2>/dev/null | sed -n 's/^cpu threads.*running with \([0-9]*\) libtorch.*/\1/p' | head -1)
    printf "| %s | %s | %s | %.1f | %.1f | %s |\n" "$label" "${*:-(default)}" "${envs[*]:-(libgomp default)}" "$wall" "$(echo "$user + $sys" | bc)" "${chose:-?}"
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| condition | flags | environment | wall s | CPU s | threads chosen (contracam env) |"
echo "|---|---|---|---|---|---|"
for half in quiet loaded; do
    if [ "$half" = loaded ]; then
        pids=""
        for _ in $(seq "$busy"); do (while :; do :; done) & pids="$pids $!"; done
        sleep 70
    fi
    c="$half"; [ "$half" = loaded ] && c="loaded ($busy busy)"
    run "$c" --
    run "$c" -- --threads 1
    run "$c" -- --threads 2
    run "$c" OMP_WAIT_POLICY=PASSIVE -- --threads 2
done
