//! Plugin hot swap: a new version (noticed by the watch, `POST
//! /plugins/reload` or SIGHUP) is compiled and validated beside the running
//! one — it loads, accepts the input schema, and declares the same output
//! schema unless the pipeline allows a change — then handed to ingest,
//! which switches at a batch boundary. A refused version leaves the old one
//! running; the refusal is logged, counted and returned.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::batch::BatchJob;
use crate::ingest::control::{IngestControl, SwapRequest};
use crate::pipeline::Pipeline;
use crate::plugin::{PluginEngine, PluginRunner};

/// What a reload came to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// the new version is running.
    Swapped {
        /// digest before.
        old: String,
        /// digest now.
        new: String,
    },
    /// the plugin has not changed.
    Unchanged {
        /// the digest in use.
        digest: String,
    },
    /// the new version was refused; the old one keeps running.
    Refused {
        /// the refused version's digest (when it could be read).
        digest: Option<String>,
        /// why.
        reason: String,
        /// the digest still in use.
        running: String,
    },
}

/// Watches and swaps the plugin of one running pipeline.
pub struct Swapper {
    pipeline: Pipeline,
    engine: Arc<PluginEngine>,
    control: Arc<IngestControl>,
    batch: Option<Arc<BatchJob>>,
    stamp: Mutex<Option<String>>,
    busy: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Swapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swapper")
            .field("running", &self.digest())
            .finish()
    }
}

impl Swapper {
    /// A swapper for `pipeline`; `control` says which version ingest runs.
    pub fn new(
        pipeline: &Pipeline,
        control: Arc<IngestControl>,
        batch: Option<Arc<BatchJob>>,
    ) -> Result<Self, crate::plugin::PluginError> {
        // one engine with the batch path: a component only runs on the engine that compiled it
        let engine = match &batch {
            Some(b) => b.engine(),
            None => PluginEngine::new(pipeline.config.plugin.limits.clone())?,
        };
        let swapper = Swapper {
            pipeline: pipeline.clone(),
            engine,
            control,
            batch,
            stamp: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
        };
        Ok(swapper)
    }

    /// The digest ingest runs.
    pub fn digest(&self) -> String {
        self.control.running().map(|r| r.digest).unwrap_or_default()
    }

    /// What changes when the plugin changes: a file's modification time and
    /// size, an object's ETag and size (a `HEAD`, not a download).
    async fn stamp(&self) -> Option<String> {
        let location = self.pipeline.plugin_location();
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let store = crate::objstore::Location::open(
                &format!("s3://{bucket}"),
                &self.pipeline.config.lake.s3,
            )
            .ok()?;
            let meta = object_store::ObjectStoreExt::head(store.store().as_ref(), &store.key(key))
                .await
                .ok()?;
            return Some(format!("{}:{}", meta.e_tag.unwrap_or_default(), meta.size));
        }
        let meta = std::fs::metadata(location.strip_prefix("file://").unwrap_or(&location)).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?;
        Some(format!("{}:{}", modified.as_nanos(), meta.len()))
    }

    /// Check the plugin for a new version: when its stamp (modification
    /// time, ETag) changed, read it and compare digests.
    pub async fn poll(&self) -> Option<ReloadOutcome> {
        let stamp = self.stamp().await;
        {
            let mut last = self.stamp.lock().expect("stamp");
            if stamp.is_none() || stamp == *last {
                return None;
            }
            *last = stamp;
        }
        match self.reload("watch").await {
            ReloadOutcome::Unchanged { .. } => None,
            other => Some(other),
        }
    }

    /// Read, validate and switch to the plugin's current bytes.
    pub async fn reload(&self, trigger: &str) -> ReloadOutcome {
        let _one_at_a_time = self.busy.lock().await;
        let running = self.digest();
        let refuse = |digest: Option<String>, reason: String| {
            tracing::warn!(trigger, digest = digest.as_deref().unwrap_or("-"), %reason, running = %running, "new plugin version refused; the old one keeps running");
            self.control
                .metrics
                .plugin_swaps_refused
                .fetch_add(1, Ordering::Relaxed);
            ReloadOutcome::Refused {
                digest,
                reason,
                running: running.clone(),
            }
        };
        let pipeline = self.pipeline.clone();
        let handle = tokio::runtime::Handle::current();
        let read =
            tokio::task::spawn_blocking(move || crate::ingest::read_plugin(&pipeline, &handle))
                .await
                .expect("plugin reader");
        let (name, bytes) = match read {
            Ok(r) => r,
            Err(e) => return refuse(None, e.to_string()),
        };
        let digest = crate::plugin::digest_of(&bytes);
        if digest == running {
            return ReloadOutcome::Unchanged { digest };
        }
        // compile and initialise beside the running version
        let (engine, pipeline) = (self.engine.clone(), self.pipeline.clone());
        let validated = tokio::task::spawn_blocking(move || {
            let plugin = engine
                .load_bytes(&name, &bytes)
                .map_err(|e| e.to_string())?;
            let runner = PluginRunner::new(
                engine,
                plugin.clone(),
                &pipeline.schema,
                &pipeline.plugin_config(),
            )
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((plugin, runner))
        })
        .await
        .expect("plugin validation");
        let (plugin, runner) = match validated {
            Ok(v) => v,
            Err(reason) => return refuse(Some(digest), reason),
        };
        let output = runner.output_schema().clone();
        let expected = self.control.running().map(|r| r.output);
        if let Some(expected) = expected
            && expected != output
            && !self.pipeline.config.plugin.allow_schema_change
        {
            return refuse(
                Some(digest),
                format!(
                    "output schema changed ({output}, was {expected}); set plugin.allow_schema_change = true to accept it"
                ),
            );
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.control.request_swap(SwapRequest { runner, reply: tx });
        let reply = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(120)))
            .await
            .expect("swap reply")
            .unwrap_or_else(|_| Err("ingest did not reach a batch boundary within 120 s".into()));
        match reply {
            Ok(new) => {
                if let Some(batch) = &self.batch {
                    batch.set_plugin(self.engine.clone(), plugin);
                }
                self.control
                    .metrics
                    .plugin_swaps
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(trigger, old = %running, new = %new, "plugin hot-swapped");
                ReloadOutcome::Swapped { old: running, new }
            }
            Err(reason) => refuse(Some(digest), reason),
        }
    }
}
