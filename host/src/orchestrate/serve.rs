//! The orchestrator as a service: `POST /events` (S3 notifications),
//! `GET /healthz`, and the loop that runs debounced partitions and polls
//! the commit log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use super::event::parse_notification;
use super::run::Orchestrator;

/// The orchestrator's HTTP route, `POST /events`.
pub fn events_router(orchestrator: Arc<Orchestrator>) -> Router {
    Router::new()
        .route("/events", post(events))
        .with_state(orchestrator)
}

/// `POST /events` and `GET /healthz` (for `weir orchestrate` alone).
pub fn router(orchestrator: Arc<Orchestrator>) -> Router {
    events_router(orchestrator).route("/healthz", get(|| async { "ok\n" }))
}

async fn events(State(orchestrator): State<Arc<Orchestrator>>, body: Bytes) -> Response {
    match parse_notification(&body) {
        Ok(objects) => {
            let intake = orchestrator.intake(&objects).await;
            tracing::info!(objects = objects.len(), dates = ?intake.dates, ignored = intake.ignored, duplicates = intake.duplicates, "events received");
            (StatusCode::ACCEPTED, axum::Json(intake)).into_response()
        }
        Err(reason) => {
            let shown = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            tracing::warn!(%reason, body = %shown, "malformed event refused");
            (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
        }
    }
}

/// Run debounced partitions and poll the commit log until `stop` is cancelled;
/// the run in progress finishes (its lease is released) before returning.
pub async fn work_loop(orchestrator: Arc<Orchestrator>, stop: CancellationToken) {
    let poll_every = Duration::from_millis(orchestrator.config().poll_interval_ms);
    let mut last_poll: Option<Instant> = None;
    while !stop.is_cancelled() {
        if !poll_every.is_zero() && last_poll.is_none_or(|t| t.elapsed() >= poll_every) {
            last_poll = Some(Instant::now());
            match orchestrator.poll().await {
                Ok(dates) if !dates.is_empty() => {
                    tracing::info!(?dates, "commit log shows new or failed partitions")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "commit log poll failed; retrying at the next interval")
                }
            }
        }
        for (date, outcome) in orchestrator.run_ready().await {
            tracing::info!(partition = %date, ?outcome, "run finished");
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
