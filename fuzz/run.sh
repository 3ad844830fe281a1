#!/usr/bin/env bash
# Build every fuzz target once and run each for SECONDS (default 20): the regression inputs in
# fuzz/regressions/<target>/ first, then the seeds (fuzz/seeds/<target>/) and the working corpus
# (fuzz/corpus/<target>/, not committed) as the starting corpus. Installs the nightly toolchain
# and cargo-fuzz when they are missing (quietly; fails if it cannot). Exits non-zero when any
# target crashes, hangs or runs out of memory, naming the input and how to reproduce it.
#
#   fuzz/run.sh            # what scripts/test runs (CI)
#   fuzz/run.sh 3600       # an hour per target
#   FUZZ_TARGETS="gpt lvm" fuzz/run.sh 600
#
# Env: FUZZ_TARGETS      targets to run (default: all)
#      FUZZ_SANITIZER    none (default: fastest; panics, overflow checks, timeouts, OOM and huge
#                        allocations are still caught) or address
#      FUZZ_BUILD_ONLY=1 build, do not run (scripts/test starts the build early)
#      FUZZ_JOBS         targets run at a time (default: the number of cores)
#      FUZZ_LOG_DIR      where each run's libFuzzer output goes (default fuzz/target/logs)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
sanitizer=${FUZZ_SANITIZER:-none}
logs=${FUZZ_LOG_DIR:-$(pwd)/target/logs}
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
# Our own target dir (another toolchain and flags), whatever the caller exports.
unset CARGO_TARGET_DIR
mkdir -p target "$logs"

die() {
  echo "FAIL: fuzz: $*" >&2
  exit 1
}

# ---- toolchain ----
command -v rustup >/dev/null || die "rustup is not installed: the fuzz targets need a nightly toolchain (install rustup, then run this again)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain" >&2
  rustup toolchain install nightly --profile minimal >target/rustup.log 2>&1 ||
    { tail -20 target/rustup.log >&2; die "rustup toolchain install nightly failed (see above)"; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >target/cargo-fuzz-install.log 2>&1 ||
    { tail -20 target/cargo-fuzz-install.log >&2; die "cargo install cargo-fuzz failed (see above)"; }
fi

# ---- build (once, all targets) ----
start=$SECONDS
if ! cargo +nightly fuzz build -s "$sanitizer" --target-dir target >target/build.log 2>&1; then
  tail -40 target/build.log >&2
  die "cargo +nightly fuzz build failed (full log: fuzz/target/build.log)"
fi
echo "fuzz: built the targets in $((SECONDS - start)) s (sanitizer: $sanitizer)"
[ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0

# ---- run ----
bin=target/x86_64-unknown-linux-gnu/release
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
# The image targets write their input to a scratch file for every run: keep it in memory.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
# One target: its regression inputs, then the timed run. Prints its result; non-zero on a crash.
run_target() {
  local t=$1 log="$logs/$1.log" regs runs cov input
  mkdir -p "corpus/$t" "artifacts/$t" "regressions/$t" "seeds/$t"
  # Regressions first: each must run clean on its own.
  mapfile -t regs < <(find "regressions/$t" -type f ! -name '.*' | sort)
  if [ ${#regs[@]} -gt 0 ] && ! "$bin/$t" -timeout=25 "${regs[@]}" </dev/null >"$log" 2>&1; then
    echo "FAIL: fuzz target $t fails on a regression input (log: $log):"
    grep -E "panicked|ERROR: libFuzzer|Running: " "$log" | tail -5
    echo "  reproduce: cd fuzz && cargo +nightly fuzz run -s $sanitizer $t <the input above>"
    return 1
  fi
  # -timeout: one input taking longer is a hang; -rss_limit_mb also caps a single allocation.
  if "$bin/$t" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
      "corpus/$t" "seeds/$t" "regressions/$t" </dev/null >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    echo "fuzz: $t ok: ${runs:-?} runs in ${seconds} s, coverage ${cov:-?}"
  else
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "FAIL: fuzz target $t crashed; input: fuzz/${input:-artifacts/$t/} (log: $log):"
    grep -E "panicked at|^ERROR|SUMMARY|thread '" "$log" | head -6 | sed 's/^/  /'
    echo "  reproduce: cd fuzz && cargo +nightly fuzz run -s $sanitizer $t ${input:-artifacts/$t/<input>}"
    echo "  then fix the parser and keep the input: cp fuzz/$input fuzz/regressions/$t/"
    return 1
  fi
}

# A libFuzzer run keeps one core busy: as many at a time as there are cores (FUZZ_JOBS).
jobs_max=${FUZZ_JOBS:-$(nproc)}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
for t in $targets; do
  [ -x "$bin/$t" ] || die "no fuzz target $t (cargo fuzz list names them)"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  (
    rc=0
    run_target "$t" >"$results/$t.out" 2>&1 || rc=$?
    echo "$rc" >"$results/$t.rc"
  ) &
done
wait
failed=()
for t in $targets; do
  cat "$results/$t.out"
  [ "$(cat "$results/$t.rc")" = 0 ] || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: fuzz: ${#failed[@]} target(s) crashed: ${failed[*]}"
  exit 1
fi
echo "fuzz: every target ran ${seconds} s without a crash (total $((SECONDS - start)) s)"
