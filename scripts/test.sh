#!/usr/bin/env bash
# weir's test command (the README's, and what .ci/run calls).
#
# Brings up what the tests need, idempotently: the wasm32-wasip2 target, the
# plugin components (Rust; Python, JavaScript and C with their toolchains,
# scripts/tools.sh), the embedded broker's binary (tansu) and the Python
# test tools (scripts/tools.sh, under ~/.cache/weir-tools), PostgreSQL on
# 127.0.0.1:5432 (installed from Debian's packages and started when it is
# not running), moto server (S3/DynamoDB/Lambda stand-in) on 127.0.0.1. Then
# checks formatting, lints and runs every test. Stops what it started (each
# test starts and stops its own embedded broker).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
TOOLS="${WEIR_TOOLS_DIR:-$HOME/.cache/weir-tools}"
mkdir -p "$TOOLS"

step() { printf '\n== %s\n' "$*" >&2; }

step "plugins (wasm32-wasip2, release) -> plugins/dist"
bash scripts/build-plugins.sh
export WEIR_PLUGIN_DIR="$PWD/plugins/dist"
export WEIR_CACHE_DIR="$CARGO_TARGET_DIR/weir-cache"

PG_STARTED=""
MOTO_PID=""
cleanup() {
    if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
    if [ -n "$PG_STARTED" ]; then pg_ctlcluster "$PG_STARTED" main stop || true; fi
}
trap cleanup EXIT

step "PostgreSQL on 127.0.0.1:5432"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
    fi
    PG_VERSION="$(ls /etc/postgresql | sort -V | tail -1)"
    HBA="/etc/postgresql/$PG_VERSION/main/pg_hba.conf"
    # the tests connect as postgres over TCP without a password
    grep -q '^host all all 127.0.0.1/32 trust' "$HBA" || sed -i '1i host all all 127.0.0.1/32 trust' "$HBA"
    pg_ctlcluster "$PG_VERSION" main start
    PG_STARTED="$PG_VERSION"
    for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.1; done
fi
pg_isready -h 127.0.0.1 -p 5432
export WEIR_TEST_POSTGRES="${WEIR_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"

step "tools: tansu (embedded broker), Python venv (moto, confluent-kafka, pyarrow, deltalake)"
bash scripts/tools.sh tansu python
export WEIR_TANSU="$TOOLS/tansu/bin/tansu"
export WEIR_TEST_PYTHON="$TOOLS/venv/bin/python"

step "moto server (S3, DynamoDB, Lambda)"
MOTO_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$TOOLS/venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$TOOLS/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null 2>&1; then break; fi
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null
export WEIR_TEST_MOTO="http://127.0.0.1:$MOTO_PORT"
export WEIR_TEST_MOTO_BIN="$TOOLS/venv/bin/moto_server"

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --release --target wasm32-wasip2 \
    -p weir-plugin-sdk -p weir-plugin-web-vitals -p weir-plugin-identity \
    -p weir-fixture-hostile -p weir-fixture-wrong-version \
    -p weir-fixture-tti-bucket -p weir-fixture-tti-bucket-plain -- -D warnings

step "the plugin SDK packages on its own (publishable, no workspace inheritance)"
cargo package -p weir-plugin-sdk --allow-dirty --quiet

step "tests"
log="$(mktemp)"
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# one closing line over every test binary (cargo prints one per binary)
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
rm -f "$log"
exit "$status"
