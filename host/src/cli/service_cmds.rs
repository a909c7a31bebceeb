//! `weir run` (the service) and `weir demo` (the quickstart).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::batch_cmds::print_table;
use super::pipeline_cmds::PipelineArgs;
use weir::pipeline::Pipeline;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// HTTP address (default: orchestrator.listen, else 127.0.0.1:7070; port 0 picks one).
    #[arg(long)]
    listen: Option<String>,
    /// Print the exit summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_service(args: RunArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let listen = args
        .listen
        .clone()
        .or_else(|| {
            pipeline
                .config
                .orchestrator
                .as_ref()
                .map(|o| o.listen.clone())
        })
        .unwrap_or_else(|| "127.0.0.1:7070".into());
    let rt = super::runtime()?;
    let summary = rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let hup = Arc::new(tokio::sync::Notify::new());
        {
            let (stop, hup) = (stop.clone(), hup.clone());
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (mut term, mut int, mut hangup) = (
                    signal(SignalKind::terminate()).expect("SIGTERM"),
                    signal(SignalKind::interrupt()).expect("SIGINT"),
                    signal(SignalKind::hangup()).expect("SIGHUP"),
                );
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                        _ = hangup.recv() => { hup.notify_one(); continue; }
                    }
                }
                tracing::info!("stopping: flushing, committing, finishing the run in progress");
                stop.cancel();
            });
        }
        weir::serve::run_service(pipeline, &listen, stop, hup).await
    })?;
    super::pipeline_cmds::print_ingest_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The pipeline file (TOML) whose settings the demo runs.
    #[arg(default_value = "pipelines/local.toml")]
    pipeline: PathBuf,
    /// Synthetic events to send.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Directory for the demo's lake, SQLite file and checkpoints (emptied first).
    #[arg(long, default_value = ".weir/demo")]
    dir: PathBuf,
    /// Pages per day in the table.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::load(&args.pipeline, &[])?;
    let rt = super::runtime()?;
    let s = rt.block_on(weir::demo::run_demo(
        &pipeline,
        &args.dir,
        args.events,
        args.top,
    ))?;
    if args.json {
        weir::outln!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let i = &s.ingest;
    weir::outln!();
    weir::outln!(
        "events sent {} · read {} · kept {} · dropped by the plugin {} · dead-lettered {}",
        s.sent,
        i.read,
        i.kept,
        i.dropped,
        i.dead_lettered
    );
    if i.read != s.sent {
        weir::outln!(
            "warning: {} of the events sent were not read (the broker acknowledged every one; ingest stopped before the end)",
            s.sent.abs_diff(i.read)
        );
    }
    weir::outln!(
        "{} files in {} Delta commits; {} dates aggregated into {} warehouse rows",
        i.files,
        i.commits,
        s.runs.len(),
        s.warehouse_rows
    );
    weir::outln!();
    weir::outln!("top pages (20 events or more) by p75 TTI per day:");
    let keep = [
        "event_date",
        "page_url",
        "events",
        "p50_tti_ms",
        "p75_tti_ms",
        "p95_tti_ms",
        "p75_ttar_ms",
    ];
    let idx: Vec<usize> = keep
        .iter()
        .filter_map(|k| s.top.columns.iter().position(|c| c == k))
        .collect();
    let narrow = weir::warehouse::Shown {
        columns: idx.iter().map(|&i| s.top.columns[i].clone()).collect(),
        rows: s
            .top
            .rows
            .iter()
            .map(|r| idx.iter().map(|&i| r[i].clone()).collect())
            .collect(),
    };
    print_table(&narrow);
    weir::outln!();
    weir::outln!(
        "lake:         {}   (a Delta table: _delta_log/ and event_date=*/ Parquet)",
        s.lake.display()
    );
    weir::outln!(
        "dead letters: {}/_dead_letters   (a Delta table: raw payload, stage, reason, offset)",
        s.lake.display()
    );
    weir::outln!(
        "warehouse:    {}   (tables page_metrics_daily, weir_load_audit)",
        s.warehouse.display()
    );
    weir::outln!("checkpoints:  {}", s.checkpoints.display());
    weir::outln!();
    weir::outln!("look further:");
    weir::outln!(
        "  sqlite3 {} 'SELECT * FROM page_metrics_daily ORDER BY p75_tti_ms DESC LIMIT 10'",
        s.warehouse.display()
    );
    weir::outln!(
        "  duckdb -c \"INSTALL delta; LOAD delta; SELECT reason, count(*) FROM delta_scan('{}/_dead_letters') GROUP BY 1\"",
        s.lake.display()
    );
    Ok(ExitCode::SUCCESS)
}
