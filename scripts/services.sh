#!/usr/bin/env bash
# Makes sure what the test suite talks to is installed and running, reusing what already is:
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth for loopback), Redis on
# 127.0.0.1:6379, the Node.js automerge-repo peers, and the schemathesis API fuzzer (PyPI, in a
# virtualenv under $TASKFLOW_STATE, default ~/.cache/taskflow). Idempotent; safe to run on a machine where everything already runs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf 'services: %s\n' "$*" >&2; }

apt_install() {
    if [ -z "${TASKFLOW_APT_UPDATED:-}" ]; then
        apt-get update -qq
        export TASKFLOW_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
    if command -v pg_isready >/dev/null && pg_ready; then
        return
    fi
    if ! command -v pg_ctlcluster >/dev/null; then
        say "installing PostgreSQL"
        apt_install postgresql
    fi
    local version conf
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    conf="/etc/postgresql/$version/main/pg_hba.conf"
    # Tests connect as postgres over loopback without a password.
    if ! grep -q '^host all postgres 127.0.0.1/32 trust' "$conf"; then
        sed -i '1i host all postgres 127.0.0.1/32 trust' "$conf"
    fi
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start -- -o "-c listen_addresses=127.0.0.1" 2>/dev/null ||
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    for _ in $(seq 1 100); do
        pg_ready && return
        sleep 0.2
    done
    say "PostgreSQL did not become ready on 127.0.0.1:5432"
    exit 1
}

drop_stale_test_databases() {
    # Each test makes its own database; drop those left by earlier runs.
    psql -h 127.0.0.1 -U postgres -d postgres -Atqc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'taskflow_test_%'" |
        while read -r db; do
            psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
        done
}

redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_redis() {
    if command -v redis-cli >/dev/null && redis_ready; then
        return
    fi
    if ! command -v redis-server >/dev/null; then
        say "installing Redis"
        apt_install redis-server
    fi
    say "starting Redis"
    # Tests keep nothing worth saving: no snapshots, no append-only file.
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 100); do
        redis_ready && return
        sleep 0.1
    done
    say "Redis did not become ready on 127.0.0.1:6379"
    exit 1
}

# The API fuzzer the tasks tests run against the live server (tests/it/fuzz.rs finds it here).
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
    local state="${TASKFLOW_STATE:-$HOME/.cache/taskflow}"
    local venv="$state/venv"
    if [ -x "$venv/bin/schemathesis" ] &&
        "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        return
    fi
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        say "installing Python"
        apt_install python3 python3-venv
    fi
    say "installing schemathesis $SCHEMATHESIS_VERSION"
    mkdir -p "$state"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

ensure_postgres
drop_stale_test_databases
ensure_redis
"$here/js-deps.sh"
ensure_schemathesis
