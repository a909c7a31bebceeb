//! `weir orchestrate`: serve (HTTP intake plus polling), one-shot events,
//! `status` and `retry`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, Subcommand};

use super::batch_cmds::print_table;
use super::pipeline_cmds::PipelineArgs;
use super::runtime;
use weir::orchestrate::serve::{router, work_loop};
use weir::orchestrate::{Orchestrator, RunOutcome, Status, parse_notification};
use weir::pipeline::Pipeline;
use weir::warehouse::{Shown, Value};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OrchestrateArgs {
    #[command(subcommand)]
    command: Option<OrchestrateCommand>,
    /// The pipeline file (TOML).
    pipeline: Option<PathBuf>,
    /// Override a key: `section.key=value`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Handle one S3 event notification (a file, or `-` for stdin) and exit.
    #[arg(long, value_name = "FILE")]
    event: Option<String>,
    /// One-shot: print the outcomes as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum OrchestrateCommand {
    /// A table of partitions: status, last run, commit position, attempts, last error.
    Status(StatusArgs),
    /// Run failed partitions (or one date) again, even if their position was loaded.
    Retry(RetryArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RetryArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Only this date (default: every failed partition).
    #[arg(long)]
    date: Option<NaiveDate>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: OrchestrateArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    match args.command {
        Some(OrchestrateCommand::Status(a)) => rt.block_on(status(a)),
        Some(OrchestrateCommand::Retry(a)) => rt.block_on(retry(a)),
        None => {
            let file = args
                .pipeline
                .clone()
                .context("usage: weir orchestrate <pipeline.toml> [--event FILE|-]")?;
            let pipeline = Pipeline::load(&file, &args.set)?;
            match &args.event {
                Some(source) => rt.block_on(one_shot(pipeline, source, args.json)),
                None => rt.block_on(serve(pipeline)),
            }
        }
    }
}

async fn serve(pipeline: Pipeline) -> anyhow::Result<ExitCode> {
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
    }
    let Some(orchestrator) = Orchestrator::open_patiently(&pipeline, Arc::default(), &stop).await?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let listen = orchestrator.config().listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("orchestrator.listen {listen}"))?;
    let address = listener.local_addr()?;
    weir::errln!("orchestrator listening on {address}");
    tracing::info!(%address, pipeline = %pipeline.config.name, "orchestrator serving POST /events");
    let worker = tokio::spawn(work_loop(orchestrator.clone(), stop.clone()));
    let stopping = stop.clone();
    axum::serve(listener, router(orchestrator))
        .with_graceful_shutdown(async move {
            stopping.cancelled().await;
            tracing::info!("stopping: finishing the run in progress");
        })
        .await?;
    stop.cancel();
    worker.await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn one_shot(pipeline: Pipeline, source: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut body = Vec::new();
    if source == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(source).with_context(|| format!("cannot read {source}"))?;
    }
    let objects = parse_notification(&body).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let orchestrator = Orchestrator::open(&pipeline, Arc::default()).await?;
    let intake = orchestrator.intake(&objects).await;
    let mut outcomes = Vec::new();
    for date in &intake.dates {
        outcomes.push((date.clone(), orchestrator.run_partition(date, false).await?));
    }
    report(&outcomes, json)
}

fn report(outcomes: &[(String, RunOutcome)], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let v: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(d, o)| {
                let mut v = serde_json::to_value(o).unwrap_or_default();
                v["partition"] = serde_json::Value::String(d.clone());
                v
            })
            .collect();
        weir::outln!("{}", serde_json::to_string_pretty(&v)?);
    } else if outcomes.is_empty() {
        weir::outln!(
            "nothing to run (the event names no commit of the data table that changed a date)"
        );
    } else {
        for (date, outcome) in outcomes {
            weir::outln!("{date}: {}", serde_json::to_string(outcome)?);
        }
    }
    let failed = outcomes
        .iter()
        .any(|(_, o)| matches!(o, RunOutcome::Failed { .. }));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let checkpoints = pipeline
        .config
        .checkpoints
        .clone()
        .with_context(|| format!("{}: no [checkpoints] section", pipeline.file.display()))?;
    let store = weir::orchestrate::open_store(&checkpoints).await?;
    let all = store.list(&pipeline.config.name).await?;
    if args.json {
        weir::outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    let shown = Shown {
        columns: [
            "partition",
            "status",
            "last_run",
            "position",
            "attempts",
            "lease_owner",
            "last_error",
        ]
        .map(String::from)
        .to_vec(),
        rows: all
            .iter()
            .map(|c| {
                vec![
                    Value::Text(c.partition.clone()),
                    Value::Text(c.status.as_str().into()),
                    text(&c.last_run),
                    text(&c.position),
                    Value::Int(c.attempts.into()),
                    text(&c.lease_owner),
                    text(&c.last_error.as_ref().map(|e| e.chars().take(120).collect())),
                ]
            })
            .collect(),
    };
    print_table(&shown);
    Ok(ExitCode::SUCCESS)
}

async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let orchestrator = Orchestrator::open(&pipeline, Arc::default()).await?;
    let dates: Vec<String> = match args.date {
        Some(d) => vec![d.to_string()],
        None => orchestrator
            .store()
            .list(orchestrator.name())
            .await?
            .into_iter()
            .filter(|c| c.status == Status::Failed)
            .map(|c| c.partition)
            .collect(),
    };
    let mut outcomes = Vec::new();
    for date in dates {
        let outcome = orchestrator.run_partition(&date, true).await?;
        outcomes.push((date, outcome));
    }
    report(&outcomes, args.json)
}
