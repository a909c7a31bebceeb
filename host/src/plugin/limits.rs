//! Sandbox limits, configurable per pipeline (`[plugin.limits]`).

use serde::{Deserialize, Serialize};

/// Per-instance and per-call limits. The defaults suit batches of a few
/// thousand web events; raise them for heavy plugins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory an instance may grow to, in MiB.
    pub memory_mib: usize,
    /// CPU deadline of one `init` or `process` call, in milliseconds: the
    /// CPU time of the thread running it, so time spent waiting for a core
    /// on a busy host does not count.
    pub call_timeout_ms: u64,
    /// Wasm stack, in KiB.
    pub stack_kib: usize,
    /// Bytes of stdout/stderr kept per call (the rest is counted, not logged).
    pub output_bytes: usize,
    /// Calls one failing batch may spend isolating its poison events; past
    /// it the remaining suspects are rejected together with the error.
    pub isolation_calls: usize,
    /// CPU deadline of the calls that isolate events after a timeout, in
    /// milliseconds: once a call of a batch timed out, its pieces run with
    /// this deadline (or ten times what the plugin needed for as many
    /// events in earlier calls, when that is longer), so an endless loop
    /// costs a fraction of `call_timeout_ms` per piece.
    pub isolation_timeout_ms: u64,
    /// CPU time one batch may spend isolating failing events, in
    /// milliseconds; past it the remaining suspects are rejected together
    /// with the error. Like the call deadlines it counts the thread's CPU
    /// time, not wall-clock time, so a busy host cannot cut it short.
    pub isolation_budget_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 256,
            call_timeout_ms: 2_000,
            stack_kib: 1024,
            output_bytes: 64 * 1024,
            isolation_calls: 256,
            isolation_timeout_ms: 100,
            isolation_budget_ms: 8_000,
        }
    }
}

impl Limits {
    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib.saturating_mul(1 << 20)
    }
}
