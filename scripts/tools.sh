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
#   bash scripts/tools.sh js       componentize-js (npm, pinned) in npm/, for the
#                                  JavaScript plugin
#   bash scripts/tools.sh c        the C plugin's toolchain: Debian's clang, lld,
#                                  wasi-libc and wasm32 compiler-rt; wasm-tools
#                                  (crates.io, pinned) in cargo/bin;
#                                  the WASI preview1 adapter (from the crate
#                                  wasi-preview1-component-adapter-provider, the
#                                  host's wasmtime version) in adapter/
#   bash scripts/tools.sh wit-bindgen  wit-bindgen-cli (crates.io, pinned), only to
#                                  regenerate the C plugin's committed bindings
#   bash scripts/tools.sh          tansu and python
set -euo pipefail
TOOLS="${WEIR_TOOLS_DIR:-$HOME/.cache/weir-tools}"
TANSU_VERSION=0.6.0
COMPONENTIZE_JS_VERSION=0.23.0
WIT_BINDGEN_VERSION=0.57.1
WASM_TOOLS_VERSION=1.263.0
ADAPTER_VERSION=48.0.8
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$TOOLS"

# extract_crates DIR NAME@VERSION...: the published sources of crates, through
# cargo (its registry and cache), unpacked as DIR/NAME-VERSION
extract_crates() {
    local dir="$1"
    shift
    local fetch="$dir/.fetch"
    mkdir -p "$fetch/src"
    {
        printf '[package]\nname = "weir-fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n'
        for spec in "$@"; do
            printf '%s = { version = "=%s", default-features = false }\n' "${spec%@*}" "${spec#*@}"
        done
    } >"$fetch/Cargo.toml"
    touch "$fetch/src/lib.rs"
    cargo fetch --manifest-path "$fetch/Cargo.toml" >&2
    local cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
    for spec in "$@"; do
        tar xzf "$(ls "$cache"/*/"${spec%@*}-${spec#*@}.crate" | head -1)" -C "$dir"
    done
    rm -rf "$fetch"
}

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
    rm -rf "$src" && mkdir -p "$src"
    # the published sources of the binary crate and the two libraries patched
    extract_crates "$src" "tansu@$TANSU_VERSION" "tansu-broker@$TANSU_VERSION" "tansu-storage@$TANSU_VERSION"
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

install_js() {
    local dir="$TOOLS/npm"
    local bin="$dir/node_modules/.bin/componentize-js"
    if [ -x "$bin" ] && grep -q "\"version\": \"$COMPONENTIZE_JS_VERSION\"" \
        "$dir/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null; then
        return
    fi
    mkdir -p "$dir"
    (cd "$dir" && npm install --no-audit --no-fund --silent \
        "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >&2)
}

install_c() {
    if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null \
        || [ ! -f /usr/lib/wasm32-wasi/libc.a ] \
        || ! ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null; }
    fi
    local root="$TOOLS/cargo"
    # built once per machine, in its own build directory (removed afterwards)
    if [ "$("$root/bin/wasm-tools" --version 2>/dev/null | cut -d' ' -f2)" != "$WASM_TOOLS_VERSION" ]; then
        CARGO_TARGET_DIR="$TOOLS/cargo-build" cargo install --locked --quiet --root "$root" \
            "wasm-tools@$WASM_TOOLS_VERSION" --no-default-features --features component
    fi
    rm -rf "$TOOLS/cargo-build"
    local adapter="$TOOLS/adapter/$ADAPTER_VERSION/wasi_snapshot_preview1.reactor.wasm"
    if [ ! -f "$adapter" ]; then
        local fetch="$TOOLS/adapter/fetch"
        rm -rf "$fetch" && mkdir -p "$fetch"
        extract_crates "$fetch" "wasi-preview1-component-adapter-provider@$ADAPTER_VERSION"
        mkdir -p "$(dirname "$adapter")"
        cp "$fetch/wasi-preview1-component-adapter-provider-$ADAPTER_VERSION/artefacts/wasi_snapshot_preview1.reactor.wasm" "$adapter"
        rm -rf "$fetch"
    fi
}

# only to regenerate plugins/web-vitals-c/gen after a WIT change (the
# generated bindings are committed)
install_wit_bindgen() {
    local root="$TOOLS/cargo"
    if [ "$("$root/bin/wit-bindgen" --version 2>/dev/null | cut -d' ' -f2)" != "$WIT_BINDGEN_VERSION" ]; then
        CARGO_TARGET_DIR="$TOOLS/cargo-build" cargo install --locked --quiet --root "$root" \
            "wit-bindgen-cli@$WIT_BINDGEN_VERSION" --no-default-features --features c
        rm -rf "$TOOLS/cargo-build"
    fi
}

[ $# -gt 0 ] || set -- tansu python
for tool in "$@"; do
    case "$tool" in
    tansu) install_tansu ;;
    python) install_python ;;
    js) install_js ;;
    c) install_c ;;
    wit-bindgen) install_wit_bindgen ;;
    *) echo "scripts/tools.sh: unknown tool '$tool' (tansu, python, js, c, wit-bindgen)" >&2; exit 2 ;;
    esac
done
