#!/usr/bin/env bash
# Runs the fuzz targets (see fuzz/README.md).
#
#   fuzz/run.sh                      smoke: each target for FUZZ_SECONDS (10) over
#                                    the committed corpus and regression inputs
#   FUZZ_RUNS=10000000 fuzz/run.sh   long mode: each target for that many executions
#   fuzz/run.sh tx_decode log_scan   only these targets (either mode)
#   fuzz/run.sh --seeds              regenerate fuzz/seeds/ from the project's encoders
#   fuzz/run.sh --cmin [targets]     fold seeds/ and work/ into corpus/, minimized
#
# New inputs found go to fuzz/work/<target>/ (not committed); a crash stops
# the run with its input in fuzz/artifacts/<target>/. Needs the nightly
# toolchain (rustup's `nightly`); installs the pinned cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
# The nightly these figures and the committed corpus were made with.
NIGHTLY_TESTED="rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"
# One build for every target and mode: no sanitizer (the code under test is
# safe Rust plus C crypto that ASan would not instrument; ASan would halve the
# executions per second and lengthen the build), optimized, with debug
# assertions and overflow checks on (cargo fuzz's default).
BUILD_FLAGS=(--sanitizer none --codegen-units 16)
TARGETS_ALL=(tx_decode rpc_request log_scan log_payload checkpoint_image da_decode)
# Per input: a timeout in seconds and an RSS cap; either one hit is a failure.
LIBFUZZER_FLAGS=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: the nightly toolchain is missing (rustup toolchain list shows no nightly);" >&2
  echo "fuzz: cargo fuzz needs it. Install it with rustup, or run on a machine that has it." >&2
  exit 1
fi
have="$(rustc +nightly --version)"
if [ "$have" != "$NIGHTLY_TESTED" ]; then
  echo "fuzz: WARNING: nightly is '$have', the corpus and README figures were made with '$NIGHTLY_TESTED'" >&2
fi
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION (pinned)"
  cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

echo "== cargo fuzz build ${BUILD_FLAGS[*]}"
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"

if [ "${1:-}" = "--seeds" ]; then
  rm -rf seeds
  target/x86_64-unknown-linux-gnu/release/make_seeds seeds
  exit 0
fi

if [ "${1:-}" = "--cmin" ]; then
  # Folds the seeds and what the runs found into corpus/<target>/, then
  # minimizes it (keeps the smallest inputs that give the same coverage).
  shift
  targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS_ALL[@]}")
  for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    for d in "seeds/$t" "work/$t"; do
      [ -d "$d" ] && find "$d" -maxdepth 1 -type f -exec cp -n {} "corpus/$t/" \;
    done
    cargo +nightly fuzz cmin "${BUILD_FLAGS[@]}" "$t" "corpus/$t" -- -rss_limit_mb=2048 -timeout=10
    echo "== $t: $(ls "corpus/$t" | wc -l) inputs, $(du -sh "corpus/$t" | cut -f1)"
  done
  exit 0
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS_ALL[@]}")
for t in "${targets[@]}"; do
  mkdir -p "work/$t" "corpus/$t" "regressions/$t"
  dirs=("work/$t" "corpus/$t" "regressions/$t")
  [ -d "seeds/$t" ] && dirs+=("seeds/$t")
  if [ -n "${FUZZ_RUNS:-}" ]; then
    echo "== $t: $FUZZ_RUNS executions"
    mode=(-runs="$FUZZ_RUNS")
  else
    echo "== $t: smoke, ${FUZZ_SECONDS:-10} s"
    mode=(-max_total_time="${FUZZ_SECONDS:-10}")
  fi
  start=$(date +%s)
  set +e
  cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" "${dirs[@]}" -- \
    "${LIBFUZZER_FLAGS[@]}" "${mode[@]}" ${FUZZ_EXTRA:-} 2>&1 |
    tee "work/$t.log" | grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|stat::|ERROR|panicked|SUMMARY|Done '
  statuses=("${PIPESTATUS[@]}")
  set -e
  status=${statuses[0]}
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $status); log in fuzz/work/$t.log, input in fuzz/artifacts/$t/" >&2
    tail -n 40 "work/$t.log" >&2
    exit 1
  fi
  echo "== $t ok in $(( $(date +%s) - start )) s"
done
echo "== fuzz: ${#targets[@]} targets ran without a failure"
