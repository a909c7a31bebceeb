#!/usr/bin/env bash
# Installs the tools weir's scripts use, idempotently (quick when done),
# under ${WEIR_TOOLS_DIR:-~/.cache/weir-tools}:
#   bash scripts/tools.sh tansu    the embedded broker: tansu 0.6.0 (a Kafka-protocol
#                                  broker in Rust, from crates.io) with weir's patch
#                                  (scripts/tansu-0.6.0.patch), in tansu/bin/tansu;
#                                  `source.brokers = "embedded"` starts it
#   bash scripts/tools.sh python   a venv with the tests' independent tools: moto server
#                                  (S3, DynamoDB, Lambda), confluent-kafka, pyarrow,
#                                  deltalake (an independent Delta reader), duckdb
#                                  (a reference SQL engine)
#   bash scripts/tools.sh          both
set -euo pipefail
TOOLS="${WEIR_TOOLS_DIR:-$HOME/.cache/weir-tools}"
TANSU_VERSION=0.6.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$TOOLS"

install_tansu() {
    local dir="$TOOLS/tansu"
    local patch="$ROOT/scripts/tansu-$TANSU_VERSION.patch"
    local stamp
    stamp="tansu $TANSU_VERSION $(sha256sum "$patch" | cut -c1-16)"
    if [ -x "$dir/bin/tansu" ] && [ "$(cat "$dir/STAMP" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    echo "building tansu $TANSU_VERSION with weir's patch into $dir (a release build, once per machine)" >&2
    local src="$dir/src"
    rm -rf "$src" && mkdir -p "$src/fetch/src"
    # the published sources of the binary crate and the two libraries patched, through cargo
    cat >"$src/fetch/Cargo.toml" <<TOML
[package]
name = "weir-tansu-fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
tansu = { version = "=$TANSU_VERSION", default-features = false }
tansu-broker = "=$TANSU_VERSION"
tansu-storage = "=$TANSU_VERSION"
TOML
    touch "$src/fetch/src/lib.rs"
    cargo fetch --manifest-path "$src/fetch/Cargo.toml" >&2
    local cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
    for crate in tansu tansu-broker tansu-storage; do
        tar xzf "$(ls "$cache"/*/"$crate-$TANSU_VERSION.crate" | head -1)" -C "$src"
    done
    # two fixes to tansu 0.6.0 (see the patch): its group coordinator left a
    # formed group formed when a member missed its session (the dead member's
    # partitions were consumed by nobody), and a fetch from an offset inside a
    # record batch skipped the rest of that batch (a resumed consumer lost it)
    (cd "$src" && git apply -p1 "$patch")
    printf '\n[patch.crates-io]\ntansu-broker = { path = "../tansu-broker-%s" }\ntansu-storage = { path = "../tansu-storage-%s" }\n' \
        "$TANSU_VERSION" "$TANSU_VERSION" >>"$src/tansu-$TANSU_VERSION/Cargo.toml"
    # its own build directory: nothing shared with weir's target, removed afterwards
    CARGO_TARGET_DIR="$dir/build" cargo build --release --features dynostore --bin tansu \
        --manifest-path "$src/tansu-$TANSU_VERSION/Cargo.toml"
    mkdir -p "$dir/bin"
    # replaced by a rename: a running broker keeps the file it started from
    cp "$dir/build/release/tansu" "$dir/bin/tansu.new"
    mv -f "$dir/bin/tansu.new" "$dir/bin/tansu"
    rm -rf "$dir/build" "$src"
    echo "$stamp" >"$dir/STAMP"
}

install_python() {
    local venv="$TOOLS/venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    if ! "$venv/bin/python" -c 'import moto, confluent_kafka, pyarrow, deltalake, duckdb' 2>/dev/null \
        || [ ! -x "$venv/bin/moto_server" ]; then
        "$venv/bin/pip" install --quiet 'moto[server]' confluent-kafka pyarrow deltalake duckdb
    fi
}

[ $# -gt 0 ] || set -- tansu python
for tool in "$@"; do
    case "$tool" in
    tansu) install_tansu ;;
    python) install_python ;;
    *) echo "scripts/tools.sh: unknown tool '$tool' (tansu, python)" >&2; exit 2 ;;
    esac
done
