//! `weir demo`: the whole pipeline on embedded defaults, bounded and
//! repeatable — an in-process Kafka, synthetic web-vitals events (some
//! broken), ingest through the plugin into a local lake, the orchestrator
//! aggregating every date into SQLite, and what to look at afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::ingest::broker::EmbeddedBroker;
use crate::ingest::{IngestError, IngestOptions, IngestSummary, ingest};
use crate::orchestrate::{OrchestrateError, Orchestrator, RunOutcome};
use crate::pipeline::Pipeline;
use crate::tools::generate::GeneratorOptions;
use crate::tools::generate::generate;
use crate::warehouse::{Shown, WarehouseError};

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up its directory or Kafka failed.
    #[error("demo: {0}")]
    Setup(String),
    /// Ingest failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The orchestrator failed.
    #[error(transparent)]
    Orchestrate(#[from] OrchestrateError),
    /// The warehouse could not be read.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
}

/// What the demo did and where it left things.
#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    /// events generated and sent.
    pub sent: u64,
    /// what ingest read, kept, dropped and dead-lettered.
    pub ingest: IngestSummary,
    /// each date and how its run ended.
    pub runs: Vec<(String, RunOutcome)>,
    /// rows in the warehouse table.
    pub warehouse_rows: usize,
    /// the top pages (with at least 20 events) by p75 TTI per day.
    pub top: Shown,
    /// the lake directory.
    pub lake: PathBuf,
    /// the SQLite file.
    pub warehouse: PathBuf,
    /// the checkpoint directory.
    pub checkpoints: PathBuf,
}

/// Run the demo in `dir` (emptied first) over `pipeline`'s settings.
pub async fn run_demo(
    pipeline: &Pipeline,
    dir: &Path,
    events: u64,
    top: usize,
) -> Result<DemoSummary, DemoError> {
    let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| setup(&format!("{}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| setup(&format!("{}: {e}", dir.display())))?;
    let dir = dir.canonicalize().map_err(|e| setup(&e))?;
    let (lake, warehouse, checkpoints) = (
        dir.join("lake"),
        dir.join("warehouse.db"),
        dir.join("checkpoints"),
    );
    let mut p = pipeline.clone();
    p.config.lake.url = lake.display().to_string();
    if let Some(w) = p.config.warehouse.as_mut() {
        w.url = format!("sqlite://{}", warehouse.display());
    }
    p.config.checkpoints = Some(crate::orchestrate::CheckpointsConfig {
        url: checkpoints.display().to_string(),
        aws: Default::default(),
    });

    let topics = p.config.source.topics();
    let kafka = EmbeddedBroker::start(&topics, p.config.source.embedded_partitions)
        .await
        .map_err(|e| setup(&e))?;
    p.config.source.brokers = kafka.bootstrap_servers();
    crate::errln!(
        "[1/4] embedded Kafka on {}: sending {events} synthetic web-vitals events (about 3% broken)",
        p.config.source.brokers
    );
    let sent = {
        let p = p.clone();
        let options = GeneratorOptions {
            bad_share: 0.03,
            ..Default::default()
        };
        tokio::task::spawn_blocking(move || generate(&p, events, None, options))
            .await
            .expect("producer")
            .map_err(|e| setup(&e))?
    };
    crate::errln!(
        "[2/4] ingest: decode, web-vitals plugin, Delta lake in {}",
        lake.display()
    );
    let ingested = {
        let (p, rt) = (p.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            ingest(
                p,
                &rt,
                IngestOptions {
                    drain: true,
                    stop: Default::default(),
                    control: None,
                },
            )
        })
        .await
        .expect("ingest")?
    };
    crate::errln!(
        "[3/4] orchestrator: Delta log polled, every date aggregated into {}",
        warehouse.display()
    );
    let orchestrator = Orchestrator::open(&p, Arc::default()).await?;
    let mut runs = Vec::new();
    for date in orchestrator.poll().await? {
        let outcome = orchestrator.run_partition(&date, false).await?;
        runs.push((date, outcome));
    }
    crate::errln!("[4/4] summary");
    let w = orchestrator.job().warehouse();
    let count = w
        .query(&format!("SELECT count(*) FROM {}", w.config().table))
        .await?;
    let warehouse_rows = match count.rows.first().and_then(|r| r.first()) {
        Some(crate::warehouse::Value::Int(n)) => *n as usize,
        _ => 0,
    };
    // pages with a handful of events say little about p75: show those with 20 or more
    let events_column = p
        .config
        .aggregate
        .as_ref()
        .map_or("events".to_string(), |a| a.events_column.clone());
    let top = w
        .show(
            &p.config.lake.partition_by,
            None,
            "p75_tti_ms",
            top,
            Some((&events_column, 20)),
        )
        .await?;
    drop(kafka);
    Ok(DemoSummary {
        sent,
        ingest: ingested,
        runs,
        warehouse_rows,
        top,
        lake,
        warehouse,
        checkpoints,
    })
}
