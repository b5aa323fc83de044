#!/usr/bin/env bash
# The whole test suite: starts what the tests need (scripts/services.sh), then runs every
# test of the workspace with cargo-nextest. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taskflow/target}"

scripts/services.sh
if ! command -v cargo-nextest >/dev/null; then
    cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --no-fail-fast "$@"
