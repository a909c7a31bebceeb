//! Errors of the plugin runtime. Every variant names the plugin (file name
//! and sha256 digest) so a log line or exit message is enough to act on.

use std::path::PathBuf;

/// How one call into a plugin failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The call ran past its CPU deadline.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The instance asked for more memory than its limit.
    #[error("out of memory (limit {0} bytes)")]
    OutOfMemory(usize),
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin answered `err` for the whole batch.
    #[error("failed the batch: {0}")]
    Refused(String),
    /// The plugin answered, but its output breaks the contract.
    #[error("broke the contract: {0}")]
    BadOutput(String),
}

impl CallFailure {
    /// The class of the failure, for summaries (`weir plugin check`).
    pub fn kind(&self) -> FailureKind {
        match self {
            CallFailure::Timeout(_) => FailureKind::Timeout,
            CallFailure::OutOfMemory(_) => FailureKind::OutOfMemory,
            CallFailure::Trap(_) => FailureKind::Trap,
            CallFailure::Refused(_) => FailureKind::Refused,
            CallFailure::BadOutput(_) => FailureKind::Contract,
        }
    }
}

/// The class of a failed call: what isolated an event, as opposed to the
/// plugin's own verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// ran past its CPU deadline.
    Timeout,
    /// asked for more memory than its limit.
    OutOfMemory,
    /// trapped (panic, `unreachable`, stack overflow).
    Trap,
    /// answered `err` for a batch.
    Refused,
    /// answered output that breaks the contract.
    Contract,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out-of-memory",
            FailureKind::Trap => "trap",
            FailureKind::Refused => "refused-batch",
            FailureKind::Contract => "contract",
        })
    }
}

/// An error of the plugin runtime.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `.wasm` file could not be read.
    #[error("cannot read plugin {path}: {error}")]
    Read {
        /// the file.
        path: PathBuf,
        /// the I/O error.
        error: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("plugin {name} (sha256 {digest}) is not a valid WebAssembly component: {reason}")]
    NotAComponent {
        /// plugin name.
        name: String,
        /// sha256 of the file.
        digest: String,
        /// what the compiler said.
        reason: String,
    },
    /// Built against a WIT version the host does not accept.
    #[error(
        "plugin {name} (sha256 {digest}) targets weir:preprocess@{found}; this host accepts {accepted}"
    )]
    WrongVersion {
        /// plugin name.
        name: String,
        /// sha256 of the file.
        digest: String,
        /// the version(s) the component was built against.
        found: String,
        /// the versions this host accepts.
        accepted: String,
    },
    /// A component that does not export `weir:preprocess/plugin` at all.
    #[error(
        "plugin {name} (sha256 {digest}) does not export weir:preprocess/plugin (exports: {exports})"
    )]
    NotAPlugin {
        /// plugin name.
        name: String,
        /// sha256 of the file.
        digest: String,
        /// what it exports instead.
        exports: String,
    },
    /// Instantiation failed (e.g. an import the sandbox does not provide).
    #[error("plugin {name} (sha256 {digest}) cannot be instantiated: {reason}")]
    Instantiate {
        /// plugin name.
        name: String,
        /// sha256 of the file.
        digest: String,
        /// why.
        reason: String,
    },
    /// `init` answered an error or failed.
    #[error("plugin {name} (sha256 {digest}) refused init: {reason}")]
    Init {
        /// plugin name.
        name: String,
        /// sha256 of the file.
        digest: String,
        /// the plugin's message.
        reason: String,
    },
    /// The wasmtime engine could not be configured.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}
