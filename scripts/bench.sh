#!/usr/bin/env bash
# Benchmarks of imagefactory: builds the workspace in release (the host and the mock
# plugins the discovery bench loads), runs the three bench binaries of host/benches,
# and prints their rows. Every figure comes with a baseline measured in the same run
# and the ratio of the two; read the ratios, as absolute times on a small, shared
# machine move from run to run.
#
#   bash scripts/bench.sh            # all benches
#   bash scripts/bench.sh api_get    # some of them: api_get, store_list, discovery, api_load, cache, farm
#
# Loopback traffic only; every bench runs a bounded number of iterations and exits.
# The full output is kept in $CARGO_TARGET_DIR/bench-report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/bench}

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(api_get store_list discovery api_load cache farm)

cargo build --release --workspace --quiet
report="$CARGO_TARGET_DIR/bench-report.txt"
: >"$report"
for bench in "${benches[@]}"; do
  echo "running $bench ..." >&2
  # The plugins the discovery bench copies are the ones just built.
  IMAGEFACTORY_BENCH_PLUGIN_DIR="$CARGO_TARGET_DIR/release" \
    cargo bench --quiet -p imagefactory --bench "$bench" | tee -a "$report" >/dev/null
done

echo
echo "imagefactory benchmarks ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), release build)"
grep -E '^(## |\| |\()' "$report"
