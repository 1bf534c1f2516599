#!/usr/bin/env bash
# What CI does, plus the style gates: format, lints, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
bash .ci/run
