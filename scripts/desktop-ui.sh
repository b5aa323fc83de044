#!/usr/bin/env bash
# Builds the desktop app's UI (desktop/ui, TypeScript + Vite) into desktop/ui/dist, which the
# app embeds when cargo builds it: installs the pinned npm packages when they changed, then
# type-checks and bundles when a source changed. Idempotent and quiet on success; callable from
# any cwd. Needs node and npm (scripts/js-deps.sh installs them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ui="$(cd "$here/../desktop/ui" && pwd)"
log="$(mktemp -t desktop-ui.XXXXXX)"
trap 'rm -f "$log"' EXIT

run_quiet() {
  if ! "$@" >"$log" 2>&1; then
    echo "desktop-ui.sh: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

cd "$ui"
stamp="node_modules/.taskflow-desktop-ui.stamp"
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  run_quiet npm install --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi
built="dist/index.html"
if [ ! -f "$built" ] || [ -n "$(find src index.html package.json tsconfig.json vite.config.ts -newer "$built" -print -quit)" ]; then
  run_quiet npm run build
fi
