#!/usr/bin/env bash
# Builds every cargo fuzz target of fuzz/ and runs each for SECONDS (default 30) on its
# corpus, failing on the first crash, panic, overflow or hang (docs/TESTING.md, "Fuzzing").
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (default: every target)
#
# Runs on the stable toolchain: `--sanitizer none` leaves out `-Zsanitizer`, the one flag of
# cargo fuzz that needs a nightly compiler (the coverage instrumentation it passes is stable).
# The corpus in fuzz/corpus/<target>/ is read, never written: inputs found during the run go
# to a scratch directory (keep interesting ones with `cargo fuzz cmin`, see the docs). A crash
# is written to fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-30}"
shift || true

# The fuzz crate has its own Cargo.lock; refuse to run if it is stale rather than rewrite it.
cargo metadata --locked --format-version 1 >/dev/null

targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build --sanitizer none

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "$scratch/$target" "corpus/$target"
  cargo fuzz run --sanitizer none "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"$scratch/$target.log" || {
    tail -n 60 "$scratch/$target.log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  }
  grep -E '^(Done|stat::number_of_executed_units)' "$scratch/$target.log" || true
done
