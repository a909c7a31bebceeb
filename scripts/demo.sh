#!/usr/bin/env bash
# The quickstart: builds the plugins (adding the wasm32-wasip2 target if
# needed), the embedded broker (tansu, once per machine) and weir, then runs the whole pipeline on embedded defaults:
#   bash scripts/demo.sh [--events N]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
bash scripts/build-plugins.sh >&2
bash scripts/tools.sh tansu >&2
cargo build --release -p weir >&2
exec "$CARGO_TARGET_DIR/release/weir" demo pipelines/local.toml "$@"
