#!/usr/bin/env bash
# Nightly GPU run (`make nightly`, after `make build-cuda`): every test of the CUDA build, the ones that need
# a GPU included (`--include-ignored`), then each suite under suites/ on the GPU (its `ci` profile when the
# suite command has profiles), then the training-speed bench in fp32 and bf16-mixed + channels_last, with
# JUnit and Markdown reports and the environment recorded.
#
#   NIGHTLY_OUT   report folder (default nightly/<UTC timestamp>)
#   NIGHTLY_DEVICE  device for the suites (default cuda)
#   NIGHTLY_TESTS   cargo test target selection (default: all), e.g. "--test distributed"
#   NIGHTLY_DATA  data dir with the paper's datasets built: the paper suites then run at their ci profile
# Exit status: 0 when every test and suite passed, 1 otherwise (the reports are written either way).
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${NIGHTLY_OUT:-nightly/$stamp}
device=${NIGHTLY_DEVICE:-cuda}
mkdir -p "$out"
py=.venv/bin/python
bin=target/release/contracam
status=0

# --- environment
{
  echo "date_utc: $stamp"
  echo "git: $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | grep -q . && echo '(dirty)')"
  echo "host: $(uname -srm)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') x $(nproc)"
  echo "rustc: $(rustc -V 2>/dev/null)"
  echo "loadavg: $(cat /proc/loadavg)"
  echo "--- nvidia-smi"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not available"
  echo "--- contracam env"
  "$bin" env --device "$device" 2>&1
} > "$out/environment.txt"
"$bin" env --device "$device" --json > "$out/environment.json" 2>/dev/null || true

# --- tests (the CUDA build's; the GPU-only ones are #[ignore]d in CPU CI and included here)
t0=$(date +%s)
# shellcheck disable=SC2086 # NIGHTLY_TESTS is a list of cargo arguments
CONTRACAM_PROGRESS=0 $CARGO test --release --locked --features cuda --no-fail-fast ${NIGHTLY_TESTS:-} \
  -- --include-ignored \
  > "$out/tests.log" 2>&1
tests_rc=$?
tests_s=$(( $(date +%s) - t0 ))
$py scripts/libtest_junit.py "$out/tests.log" "$out/tests.junit.xml" "contracam tests (cuda build)" \
  > "$out/tests.summary" 2>&1 || echo "JUnit conversion failed" >> "$out/tests.summary"
[ $tests_rc -eq 0 ] || status=1

# --- suites on the GPU
# The suites under suites/ at their own scale (the smoke suites, the walk-through); with NIGHTLY_DATA (a data
# dir where `contracam data build` has built the paper's datasets) also the paper suites, each at its `ci`
# profile. A suite with a [profiles.ci] runs that profile.
suite_files=(suites/*.toml)
data_args=()
if [ -n "${NIGHTLY_DATA:-}" ]; then
  suite_files+=(suites/paper/*.toml)
  data_args=(--data-dir "$NIGHTLY_DATA")
fi
rows=()
cases=()
for suite in "${suite_files[@]}"; do
  name=$(basename "$suite" .toml)
  profile_args=()
  if grep -q '^\[profiles\.ci\]' "$suite"; then
    profile_args=(--profile ci)
  fi
  t0=$(date +%s)
  "$bin" suite run "$suite" --quiet --device "$device" "${profile_args[@]}" "${data_args[@]}" \
    --runs-dir "$out/runs" --out "$out/$name.results.json" > "$out/$name.log" 2>&1
  rc=$?
  s=$(( $(date +%s) - t0 ))
  [ $rc -eq 0 ] || status=1
  rows+=("| $name | $([ $rc -eq 0 ] && echo pass || echo "FAIL (exit $rc)") | $s |")
  if [ $rc -eq 0 ]; then
    cases+=("<testcase classname=\"suites\" name=\"$name\" time=\"$s\"/>")
  else
    cases+=("<testcase classname=\"suites\" name=\"$name\" time=\"$s\"><failure message=\"exit $rc; see $name.log\"/></testcase>")
  fi
done
fails=$(printf '%s\n' "${cases[@]}" | grep -c '<failure' || true)
{
  echo '<?xml version="1.0" encoding="utf-8"?>'
  echo "<testsuites name=\"contracam suites ($device)\"><testsuite name=\"suites\" tests=\"${#cases[@]}\" failures=\"$fails\">"
  printf '%s\n' "${cases[@]}"
  echo '</testsuite></testsuites>'
} > "$out/suites.junit.xml"

# --- training speed on the device (train bench, ResNet-18 at 224 px, both sides on the same device): fp32,
# then bf16-mixed with channels_last. A failed bench fails the night.
bench_rows=()
for prec in fp32 bf16-mixed; do
  bench_args=(--only r18-224 --rounds 3 --steps 20 --warmup 3 --device "$device" --json "$out/bench-$prec.json")
  [ -x "$py" ] && bench_args+=(--python "$py")
  [ "$prec" = bf16-mixed ] && bench_args+=(--precision bf16-mixed --channels-last)
  "$bin" train bench "${bench_args[@]}" > "$out/bench-$prec.md" 2> "$out/bench-$prec.log"
  rc=$?
  [ $rc -eq 0 ] || status=1
  bench_rows+=("$prec: $([ $rc -eq 0 ] && echo ok || echo "FAIL (exit $rc; see bench-$prec.log)")")
done

# --- Markdown report
{
  echo "# contracam nightly $stamp"
  echo
  echo "Device for suites: \`$device\`; the paper suites at their \`ci\` profile $([ -n "${NIGHTLY_DATA:-}" ] && echo "on $NIGHTLY_DATA" || echo "not run (set NIGHTLY_DATA)")."
  echo "Environment: \`environment.txt\`."
  echo
  echo "## Tests (cargo test --release --features cuda -- --include-ignored)"
  echo
  echo "Exit $tests_rc in ${tests_s}s: $(cat "$out/tests.summary")"
  grep -E '^test .* FAILED$' "$out/tests.log" | sed 's/^/- /' || true
  echo
  echo "## Suites"
  echo
  echo "| suite | result | seconds |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "## Training speed (train bench --only r18-224 --device $device: fp32, then bf16-mixed + channels_last)"
  echo
  printf -- '- %s\n' "${bench_rows[@]}"
  for prec in fp32 bf16-mixed; do
    echo
    cat "$out/bench-$prec.md" 2>/dev/null
  done
} > "$out/report.md"
cat "$out/report.md"
echo "reports in $out"
exit $status
