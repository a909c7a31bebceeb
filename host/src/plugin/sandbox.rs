//! The store state of one plugin instance: a WASI context that grants
//! nothing, the memory limiter, captured stdout/stderr and the `logging`
//! import.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{logging, types};
use super::deadline::CpuDeadline;
use super::limits::Limits;

/// The `wasi:clocks/monotonic-clock` the host links (`wasmtime-wasi` 48);
/// a component importing any 0.2.x version is served by it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// What a plugin that waits on a timer is told (its call traps with it).
pub(crate) const TIMER_REFUSED: &str =
    "plugins may not wait on a timer (wasi:clocks/monotonic-clock subscribe-*)";

/// Replace the monotonic clock's `subscribe-duration` and
/// `subscribe-instant` with functions that trap. A plugin blocked in a
/// WASI wait runs host code, where no deadline can interrupt it: a sleep
/// would hold its worker for as long as it asked. A plugin has nothing to
/// wait for, so the call fails at once instead (`now` and `resolution`
/// stay).
pub(crate) fn refuse_timers(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    fn refused(
        _: StoreContextMut<'_, HostState>,
        _: (u64,),
    ) -> wasmtime::Result<(Resource<DynPollable>,)> {
        Err(wasmtime::format_err!("{TIMER_REFUSED}"))
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", refused)?;
    clock.func_wrap("subscribe-instant", refused)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Longest log line a plugin may write through `logging.log`.
const MAX_LOG_LINE: usize = 4096;

/// Store data of one instance.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    /// `name (sha256 abcdef012345)`, for log lines.
    label: Arc<str>,
    /// What the plugin said last in the current call (its last `logging`
    /// line, or what it wrote to stderr), as it said it; a trap's reason
    /// carries it ([`last_words`] puts it on one line, only then).
    pub(crate) last_words: Option<String>,
    /// The CPU limit of the call in progress.
    pub(crate) deadline: CpuDeadline,
}

impl HostState {
    /// A fresh state for plugin `label` under `limits`.
    pub(crate) fn new(label: Arc<str>, limits: &Limits) -> Self {
        let stdout = CapturedOutput::new(limits.output_bytes);
        let stderr = CapturedOutput::new(limits.output_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limits.memory_bytes(),
                refused: false,
            },
            stdout,
            stderr,
            label,
            last_words: None,
            deadline: CpuDeadline::default(),
        }
    }

    /// Write what the plugin printed during the last call to the log; what
    /// it wrote to stderr becomes its last words (a panic message of a
    /// plugin without the SDK's hook lands there).
    pub(crate) fn flush_output(&mut self) {
        for (stream, captured) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (text, dropped) = captured.take();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(plugin = %self.label, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(plugin = %self.label, stream, dropped_bytes = dropped, "plugin output over the limit was dropped");
            }
            if stream == "stderr" && !text.trim().is_empty() {
                self.last_words = Some(text);
            }
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, mut message: String) {
        message.truncate(message.floor_char_boundary(MAX_LOG_LINE));
        let plugin = &*self.label;
        match level {
            logging::Level::Trace => tracing::trace!(plugin, "{message}"),
            logging::Level::Debug => tracing::debug!(plugin, "{message}"),
            logging::Level::Info => tracing::info!(plugin, "{message}"),
            logging::Level::Warn => tracing::warn!(plugin, "{message}"),
            logging::Level::Error => tracing::error!(plugin, "{message}"),
        }
        if !message.trim().is_empty() {
            self.last_words = Some(message);
        }
    }
}

/// Longest "last words" attached to a trap's reason.
const MAX_LAST_WORDS: usize = 400;

/// `text` on one line, without Rust's backtrace hint, cut to
/// [`MAX_LAST_WORDS`] (only when a trap's reason is written).
pub(crate) fn last_words(text: &str) -> String {
    let mut joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    joined.truncate(joined.floor_char_boundary(MAX_LAST_WORDS));
    joined
}

/// Refuses linear-memory growth past the limit and remembers that it did,
/// so a trap that follows is reported as out-of-memory.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.limit;
        if !allowed {
            self.refused = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A bounded in-memory stdout/stderr: writes past the bound are counted and
/// discarded (never an error the guest sees, never unbounded host memory).
#[derive(Clone)]
struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    buf: Vec<u8>,
    dropped: usize,
    limit: usize,
}

impl CapturedOutput {
    fn new(limit: usize) -> Self {
        CapturedOutput {
            inner: Arc::new(Mutex::new(Captured {
                buf: Vec::new(),
                dropped: 0,
                limit,
            })),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = c.limit.saturating_sub(c.buf.len());
        let kept = room.min(bytes.len());
        c.buf.extend_from_slice(&bytes[..kept]);
        c.dropped += bytes.len() - kept;
    }

    fn take(&self) -> (String, usize) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&c.buf).into_owned();
        c.buf.clear();
        (text, std::mem::take(&mut c.dropped))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
