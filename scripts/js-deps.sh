#!/usr/bin/env bash
# Installs what the JavaScript interop kit (testkit/js: reference automerge-repo
# server, peer.mjs CLI, capture.mjs) needs: node + npm (from Debian apt when missing) and the
# pinned npm packages from package-lock.json. Idempotent and quiet on success; callable from
# any cwd. (`npm install`, not `npm ci`: npm 11 rejects `npm ci` for cbor-x's optional deps.)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
js_dir="$here/../testkit/js"
js_dir="$(cd "$js_dir" && pwd)"
log="$(mktemp -t js-deps.XXXXXX)"
trap 'rm -f "$log"' EXIT

run_quiet() {
  if ! "$@" >"$log" 2>&1; then
    echo "js-deps.sh: failed: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "js-deps.sh: node/npm missing and not root; install nodejs and npm first" >&2
    exit 1
  fi
  run_quiet apt-get update -qq
  run_quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi

# node_modules/.package-lock.json is rewritten by every npm install; we also touch a stamp
# so a lock file rewritten by that same install does not trigger another one next time.
stamp="$js_dir/node_modules/.taskflow-js-deps.stamp"
if [ ! -f "$stamp" ] || [ "$js_dir/package-lock.json" -nt "$stamp" ] || [ "$js_dir/package.json" -nt "$stamp" ]; then
  (cd "$js_dir" && run_quiet npm install --no-audit --no-fund --loglevel=error)
  touch "$stamp"
fi
