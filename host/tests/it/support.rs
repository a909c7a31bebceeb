//! Shared helpers: where the built plugins are, the `weir` binary, engines.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use weir::plugin::{Limits, PluginEngine};

/// The directory holding the built `.wasm` plugins.
pub fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    // CARGO_TARGET_TMPDIR is <target>/tmp
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("wasm32-wasip2")
        .join("release")
}

/// Path of a built plugin, e.g. `weir_plugin_web_vitals`.
pub fn wasm(name: &str) -> PathBuf {
    let path = wasm_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (bash scripts/test.sh does)",
        path.display()
    );
    path
}

/// An engine with the given limits and a compile cache under the target dir.
pub fn engine(limits: Limits) -> Arc<PluginEngine> {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-cache");
    PluginEngine::with_cache_dir(limits, Some(cache)).expect("engine")
}

/// Run the `weir` binary.
pub fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env(
            "WEIR_CACHE_DIR",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-cache"),
        )
        .output()
        .expect("run weir")
}

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
