//! Sandbox limits, configurable per pipeline (`[plugin.limits]`).

use serde::{Deserialize, Serialize};

/// Per-instance and per-call limits. The defaults suit batches of a few
/// thousand web events; raise them for heavy plugins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory an instance may grow to, in MiB.
    pub memory_mib: usize,
    /// CPU deadline of one `init` or `process` call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Wasm stack, in KiB.
    pub stack_kib: usize,
    /// Bytes of stdout/stderr kept per call (the rest is counted, not logged).
    pub output_bytes: usize,
    /// Calls one failing batch may spend isolating its poison events; past
    /// it the remaining suspects are rejected together with the error.
    pub isolation_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 256,
            call_timeout_ms: 2_000,
            stack_kib: 1024,
            output_bytes: 64 * 1024,
            isolation_calls: 256,
        }
    }
}

impl Limits {
    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib.saturating_mul(1 << 20)
    }
}
