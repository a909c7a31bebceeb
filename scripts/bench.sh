#!/usr/bin/env bash
# Benchmarks (criterion), side by side with their references:
#   bash scripts/bench.sh            all benches
#   bash scripts/bench.sh plugin     native vs Wasm web-vitals, identity plugin
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 -p weir-plugin-web-vitals -p weir-plugin-identity
export WEIR_PLUGIN_DIR="$CARGO_TARGET_DIR/wasm32-wasip2/release"
if [ $# -gt 0 ]; then
    cargo bench -p weir --bench "$1" -- "${@:2}"
else
    cargo bench -p weir
fi
