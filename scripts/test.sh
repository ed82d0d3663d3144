#!/usr/bin/env bash
# Runs every test: lint, build, unit tests and the black-box tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# --all-targets: one build with the tests' dev-dependency features unified in, so the
# test run reuses it (the plugins and the CLI the tests drive come from this build).
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
# The page's browser tests: headless Chromium through selenium (scripts/setup.d/50-browser.sh).
"${IMAGEFACTORY_SERVICES:-$HOME/.cache/imagefactory}/browser/bin/pytest" tests/browser -q -p no:cacheprovider
