//! `weir run`: one process running ingest, the orchestrator and an HTTP
//! server — `GET /healthz`, `GET /metrics`, `POST /events`, `POST
//! /plugins/reload` — with plugin hot swap (watch, HTTP, SIGHUP) and a
//! bounded shutdown on SIGINT/SIGTERM.
//!
//! - [`swap`]: validating and switching plugin versions.

pub mod swap;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::ingest::control::IngestControl;
use crate::ingest::{IngestError, IngestOptions, IngestSummary, ingest};
use crate::orchestrate::{OrchestrateError, Orchestrator};
use crate::pipeline::Pipeline;
use crate::telemetry::Metrics;
use swap::{ReloadOutcome, Swapper};

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Ingest failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The orchestrator could not start.
    #[error(transparent)]
    Orchestrate(#[from] OrchestrateError),
    /// The plugin engine could not start.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
    /// The HTTP address cannot be used.
    #[error("listen {address}: {error}")]
    Listen {
        /// the address.
        address: String,
        /// the error.
        error: std::io::Error,
    },
}

/// Shared by the HTTP handlers.
#[derive(Clone)]
struct AppState {
    control: Arc<IngestControl>,
    swapper: Arc<Swapper>,
}

/// Run everything until `stop` is set; `hup` reloads the plugin. Prints
/// `weir listening on ADDR` on stderr once serving. Returns the ingest summary.
pub async fn run_service(
    pipeline: Pipeline,
    listen: &str,
    stop: CancellationToken,
    hup: Arc<tokio::sync::Notify>,
) -> Result<IngestSummary, ServeError> {
    let metrics = Arc::new(Metrics::default());
    let control = Arc::new(IngestControl::new(metrics.clone()));
    let orchestrator = if pipeline.config.checkpoints.is_some() {
        match Orchestrator::open_patiently(&pipeline, metrics.clone(), &stop).await? {
            Some(o) => Some(o),
            None => return Ok(IngestSummary::default()),
        }
    } else {
        tracing::info!("no [checkpoints] section: running without the orchestrator");
        None
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| ServeError::Listen {
            address: listen.into(),
            error,
        })?;
    let ingest_thread = {
        let (p, stop, control) = (pipeline.clone(), stop.clone(), control.clone());
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("weir-ingest".into())
            .spawn(move || {
                ingest(
                    p,
                    &rt,
                    IngestOptions {
                        drain: false,
                        stop,
                        control: Some(control),
                    },
                )
            })
            .expect("ingest thread")
    };
    // the version ingest started with is the reference for swaps
    while control.running().is_none() && !ingest_thread.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if ingest_thread.is_finished() {
        return Err(ingest_thread
            .join()
            .expect("ingest thread")
            .err()
            .map(ServeError::Ingest)
            .unwrap_or_else(|| ServeError::Listen {
                address: listen.into(),
                error: std::io::Error::other("ingest stopped at start"),
            }));
    }
    let swapper = Arc::new(Swapper::new(
        &pipeline,
        control.clone(),
        orchestrator.as_ref().map(|o| o.job().clone()),
    )?);
    let state = AppState {
        control: control.clone(),
        swapper: swapper.clone(),
    };
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/plugins/reload", post(reload))
        .with_state(state);
    let mut tasks = Vec::new();
    if let Some(o) = &orchestrator {
        app = app.merge(crate::orchestrate::serve::events_router(o.clone()));
        tasks.push(tokio::spawn(crate::orchestrate::serve::work_loop(
            o.clone(),
            stop.clone(),
        )));
    }
    let watch_every = pipeline.config.plugin.watch_interval_ms;
    {
        let (swapper, stop) = (swapper.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = hup.notified() => { swapper.reload("SIGHUP").await; }
                    _ = tokio::time::sleep(Duration::from_millis(if watch_every == 0 { 200 } else { watch_every })) => {
                        if watch_every > 0 {
                            swapper.poll().await;
                        }
                    }
                }
            }
        }));
    }
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| listen.into());
    crate::errln!("weir listening on {address}");
    tracing::info!(%address, pipeline = %pipeline.config.name, "serving /healthz /metrics /events /plugins/reload");
    let stopping = stop.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopping.cancelled().await });
    let server = tokio::spawn(async move { server.await });
    let summary = tokio::task::spawn_blocking(move || ingest_thread.join().expect("ingest thread"))
        .await
        .expect("join");
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let _ = server.await;
    Ok(summary?)
}

async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.control.health();
    let code = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        format!(
            "{}: {}\n",
            if health.ok { "ok" } else { "unhealthy" },
            health.reason
        ),
    )
        .into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.control.metrics.render(),
    )
        .into_response()
}

async fn reload(State(state): State<AppState>) -> Response {
    let outcome = state.swapper.reload("POST /plugins/reload").await;
    let code = match outcome {
        ReloadOutcome::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (code, axum::Json(outcome)).into_response()
}
