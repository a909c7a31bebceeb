#!/usr/bin/env bash
# Build every plugin component (wasm32-wasip2, release) and copy them to
# plugins/dist/, where the pipeline files look for them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 \
    -p weir-plugin-web-vitals -p weir-plugin-identity \
    -p weir-fixture-hostile -p weir-fixture-wrong-version
mkdir -p plugins/dist
for name in weir_plugin_web_vitals weir_plugin_identity weir_fixture_hostile weir_fixture_wrong_version; do
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/$name.wasm" plugins/dist/
done
echo "plugins in plugins/dist/" >&2
