//! The wasmtime engine shared by all plugins: configuration, the epoch
//! ticker behind per-call deadlines, compilation with a cache (in memory and
//! on disk, keyed by the component's sha256), and the WIT version check.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, OptLevel};

use super::bindings::{Preprocessor, PreprocessorPre};
use super::error::PluginError;
use super::limits::Limits;
use super::sandbox::{HostState, refuse_timers};

/// The `weir:preprocess` versions this host runs.
pub const ACCEPTED_VERSIONS: &[&str] = &["0.1.0"];

/// How often the epoch advances; call deadlines are multiples of it.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A compiled, version-checked plugin, ready to instantiate.
pub struct LoadedPlugin {
    /// File name (or URL) the plugin was loaded from.
    pub name: String,
    /// Hex sha256 of the `.wasm` bytes.
    pub digest: String,
    /// Size of the `.wasm` file in bytes.
    pub size: usize,
    pub(crate) pre: PreprocessorPre<HostState>,
}

impl LoadedPlugin {
    /// `name (sha256 0123456789ab)`: how logs and errors name the plugin.
    pub fn label(&self) -> String {
        format!("{} (sha256 {})", self.name, &self.digest[..12])
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish()
    }
}

/// A component's identity: the hex sha256 of its bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The engine: one per process, shared by every runner.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    cache_dir: Option<PathBuf>,
    compiled: Mutex<HashMap<String, Component>>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("limits", &self.limits)
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl PluginEngine {
    /// An engine enforcing `limits`, caching compiled components under the
    /// default cache directory (`$WEIR_CACHE_DIR`, else `$XDG_CACHE_HOME/weir`
    /// or `~/.cache/weir`).
    pub fn new(limits: Limits) -> Result<Arc<Self>, PluginError> {
        Self::with_cache_dir(limits, default_cache_dir())
    }

    /// An engine with an explicit compile cache directory (`None`: memory only).
    pub fn with_cache_dir(
        limits: Limits,
        cache_dir: Option<PathBuf>,
    ) -> Result<Arc<Self>, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(limits.stack_kib.max(64) * 1024);
        config.cranelift_opt_level(OptLevel::Speed);
        if std::env::var("WEIR_WASM_PROFILER").is_ok_and(|v| v == "perfmap") {
            // lets `perf` name JIT-compiled plugin functions
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        refuse_timers(&mut linker).map_err(|e| PluginError::Engine(e.to_string()))?;
        Preprocessor::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        start_epoch_ticker(&engine);
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            limits,
            cache_dir,
            compiled: Mutex::new(HashMap::new()),
        }))
    }

    /// The limits every instance of this engine runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Read, compile (or fetch from the cache) and check a `.wasm` file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = std::fs::read(path).map_err(|error| PluginError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.load_bytes(&name, &bytes)
    }

    /// Compile (or fetch from the cache) and check a component's bytes.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginError> {
        let digest = digest_of(bytes);
        let component = self.compile(name, &digest, bytes)?;
        check_version(&self.engine, name, &digest, &component)?;
        let pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| PluginError::Instantiate {
                    name: name.to_string(),
                    digest: digest.clone(),
                    reason: format!("{e:#}"),
                })?;
        let pre = PreprocessorPre::new(pre).map_err(|e| PluginError::Instantiate {
            name: name.to_string(),
            digest: digest.clone(),
            reason: format!("{e:#}"),
        })?;
        Ok(Arc::new(LoadedPlugin {
            name: name.to_string(),
            digest,
            size: bytes.len(),
            pre,
        }))
    }

    fn compile(&self, name: &str, digest: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
        {
            return Ok(c.clone());
        }
        let cached = self.cache_path(digest);
        let from_disk = cached.as_ref().filter(|p| p.exists()).and_then(|p| {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (part of the file
            // name), into weir's own cache directory.
            match unsafe { Component::deserialize_file(&self.engine, p) } {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "ignoring unreadable compiled-plugin cache entry");
                    None
                }
            }
        });
        let component = match from_disk {
            Some(c) => c,
            None => {
                let started = std::time::Instant::now();
                let c = Component::new(&self.engine, bytes).map_err(|e| {
                    PluginError::NotAComponent {
                        name: name.to_string(),
                        digest: digest.to_string(),
                        reason: one_line(&format!("{e:#}")),
                    }
                })?;
                tracing::info!(
                    plugin = name,
                    digest,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled plugin"
                );
                if let Some(path) = &cached {
                    store_in_cache(&c, path);
                }
                c
            }
        };
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_string(), component.clone());
        Ok(component)
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        Some(
            self.cache_dir
                .as_ref()?
                .join(format!("{digest}-{:016x}.cwasm", hasher.finish())),
        )
    }
}

/// Collapse a multi-line compiler message into one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEIR_CACHE_DIR") {
        return Some(PathBuf::from(dir).join("components"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("weir").join("components"))
}

fn store_in_cache(component: &Component, path: &Path) {
    let write = || -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(file = %path.display(), error = %e, "cannot write the compiled-plugin cache");
    }
}

/// Refuse components built against a `weir:preprocess` version this host
/// does not accept, naming both sides.
fn check_version(
    engine: &Engine,
    name: &str,
    digest: &str,
    component: &Component,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let accepted = |v: &str| ACCEPTED_VERSIONS.contains(&v);
    let mut found: Vec<String> = exports
        .iter()
        .chain(&imports)
        .filter_map(|n| n.strip_prefix("weir:preprocess/"))
        .filter_map(|n| n.split_once('@').map(|(_, v)| v.to_string()))
        .collect();
    found.sort();
    found.dedup();
    let exports_plugin = exports
        .iter()
        .filter_map(|n| n.strip_prefix("weir:preprocess/plugin@"))
        .any(accepted);
    if exports_plugin && found.iter().all(|v| accepted(v)) {
        return Ok(());
    }
    if found.iter().any(|v| !accepted(v)) {
        return Err(PluginError::WrongVersion {
            name: name.to_string(),
            digest: digest.to_string(),
            found: found.join(", "),
            accepted: ACCEPTED_VERSIONS
                .iter()
                .map(|v| format!("weir:preprocess@{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Err(PluginError::NotAPlugin {
        name: name.to_string(),
        digest: digest.to_string(),
        exports: if exports.is_empty() {
            "nothing".into()
        } else {
            exports.join(", ")
        },
    })
}

/// Advance the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
