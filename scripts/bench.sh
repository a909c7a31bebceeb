#!/usr/bin/env bash
# Benchmarks, side by side with their references:
#   bash scripts/bench.sh                 all criterion benches
#   bash scripts/bench.sh plugin          native vs Wasm web-vitals, identity plugin (criterion)
#   bash scripts/bench.sh aggregate [N]   weir aggregate over a lake of N (5 000 000) events beside DuckDB
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
TOOLS="${WEIR_TOOLS_DIR:-$HOME/.cache/weir-tools}"
if [ "${1:-}" = aggregate ]; then
    bash scripts/build-plugins.sh
    [ -x "$TOOLS/venv/bin/python" ] || python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/python" -c 'import duckdb' 2>/dev/null || "$TOOLS/venv/bin/pip" install --quiet duckdb
    cargo build --release -p weir
    exec "$CARGO_TARGET_DIR/release/weir" bench aggregate pipelines/local.toml \
        --events "${2:-5000000}" --duckdb-python "$TOOLS/venv/bin/python" "${@:3}"
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 -p weir-plugin-web-vitals -p weir-plugin-identity
export WEIR_PLUGIN_DIR="$CARGO_TARGET_DIR/wasm32-wasip2/release"
if [ $# -gt 0 ]; then
    cargo bench -p weir --bench "$1" -- "${@:2}"
else
    cargo bench -p weir
fi
