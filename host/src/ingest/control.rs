//! What a running ingest shares with the service around it: metrics, its
//! health, and plugin swaps handed over to be applied at a batch boundary.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use crate::pipeline::DeclaredSchema;
use crate::plugin::PluginRunner;
use crate::telemetry::Metrics;

/// A validated plugin waiting to be switched in; the reply says the digest
/// now in use, or why the switch could not happen.
pub struct SwapRequest {
    /// the new plugin, instantiated and initialised.
    pub runner: PluginRunner,
    /// where the outcome goes.
    pub reply: Sender<Result<String, String>>,
}

/// Whether ingest is consuming and committing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// consuming and committing.
    pub ok: bool,
    /// what is wrong (or what it is doing).
    pub reason: String,
}

/// The plugin version ingest runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// its sha256.
    pub digest: String,
    /// the output schema it declared (the reference for later versions).
    pub output: DeclaredSchema,
}

/// Shared by a running ingest and the service.
pub struct IngestControl {
    /// the process's metrics.
    pub metrics: Arc<Metrics>,
    swap: Mutex<Option<SwapRequest>>,
    health: Mutex<Health>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for IngestControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestControl")
            .field("health", &self.health())
            .finish()
    }
}

impl IngestControl {
    /// A control reporting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        IngestControl {
            metrics,
            swap: Mutex::new(None),
            health: Mutex::new(Health {
                ok: false,
                reason: "starting".into(),
            }),
            running: Mutex::new(None),
        }
    }

    /// The plugin version ingest runs (`None` until ingest has started).
    pub fn running(&self) -> Option<Running> {
        self.running.lock().expect("running").clone()
    }

    /// Record the version ingest runs now (at start and after a swap).
    pub(crate) fn set_running(&self, digest: &str, output: &DeclaredSchema) {
        *self.metrics.plugin_digest.lock().expect("metrics") = digest.to_string();
        *self.running.lock().expect("running") = Some(Running {
            digest: digest.to_string(),
            output: output.clone(),
        });
    }

    /// Ask the ingest loop to switch plugins at its next batch boundary; a
    /// request still waiting is answered as superseded.
    pub fn request_swap(&self, request: SwapRequest) {
        if let Some(old) = self.swap.lock().expect("swap").replace(request) {
            let _ = old.reply.send(Err("superseded by a newer version".into()));
        }
    }

    pub(crate) fn take_swap(&self) -> Option<SwapRequest> {
        self.swap.lock().expect("swap").take()
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health.lock().expect("health").clone()
    }

    pub(crate) fn set_health(&self, ok: bool, reason: &str) {
        let mut h = self.health.lock().expect("health");
        if h.ok != ok || h.reason != reason {
            *h = Health {
                ok,
                reason: reason.into(),
            };
        }
    }
}
