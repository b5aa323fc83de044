#!/usr/bin/env bash
# The whole test suite: starts what the tests need (scripts/services.sh), then runs every
# test of the workspace with cargo-nextest. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taskflow/target}"
# Incremental state for every test binary of the workspace runs to tens of GB in a kept target
# directory, and a test run gains little from it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Invariant from ARCHITECTURE.md: `proto` does no I/O, so it depends on no runtime, socket,
# database or HTTP crate.
forbidden="$(cargo tree -p taskflow-proto -e normal --prefix none | awk '{print $1}' |
    grep -E '^(tokio|mio|sqlx|axum|hyper|tungstenite|tokio-tungstenite|reqwest)$' || true)"
if [ -n "$forbidden" ]; then
    echo "taskflow-proto must do no I/O but depends on: $forbidden" >&2
    exit 1
fi

scripts/services.sh
if ! command -v cargo-nextest >/dev/null; then
    cargo install cargo-nextest --locked
fi
# --all-features: the server with Kafka (feature `kafka`) and its tests against tansu.
cargo nextest run --workspace --all-features --no-fail-fast "$@"
