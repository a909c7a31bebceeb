#!/usr/bin/env bash
# Build every plugin component and copy them to plugins/dist/, where the
# pipeline files and tests look for them:
#   Rust plugins and fixtures: cargo, wasm32-wasip2, release;
#   the Python web-vitals plugin: componentize-py (installed on first use
#   into ~/.cache/weir-tools/venv; it works offline once installed).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
TOOLS="${WEIR_TOOLS_DIR:-$HOME/.cache/weir-tools}"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 \
    -p weir-plugin-web-vitals -p weir-plugin-identity \
    -p weir-fixture-hostile -p weir-fixture-wrong-version
mkdir -p plugins/dist
for name in weir_plugin_web_vitals weir_plugin_identity weir_fixture_hostile weir_fixture_wrong_version; do
    cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/$name.wasm" plugins/dist/
done

if [ ! -x "$TOOLS/venv/bin/componentize-py" ]; then
    [ -x "$TOOLS/venv/bin/python" ] || python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet 'componentize-py==0.25.1'
fi
# rebuild the Python component only when its sources or the WIT changed
py_out=plugins/dist/weir_plugin_web_vitals_py.wasm
if [ ! -f "$py_out" ] || [ -n "$(find plugins/web-vitals-py wit -newer "$py_out" -name '*.py' -o -newer "$py_out" -name '*.wit')" ]; then
    "$TOOLS/venv/bin/componentize-py" -d wit -w preprocessor componentize \
        -p plugins/web-vitals-py app -o "$py_out"
fi
echo "plugins in plugins/dist/" >&2
