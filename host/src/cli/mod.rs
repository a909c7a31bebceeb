//! Command-line arguments and dispatch. Library errors are wrapped with
//! `anyhow` here, at the edge, and printed as one line. Commands print their
//! results on stdout through `weir::outln!` (a closed pipe is not a panic).

mod batch_cmds;
mod orchestrate_cmds;
mod pipeline_cmds;
mod plugin;
mod service_cmds;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// weir: Kafka → WebAssembly plugins → Parquet lake → aggregates.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "WEIR_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// readable lines.
    Human,
    /// one JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, benchmark and compare preprocessing plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Check a pipeline file without running it.
    Validate(pipeline_cmds::PipelineArgs),
    /// Run the streaming path: Kafka → plugin → lake, until SIGINT/SIGTERM (or --drain).
    Ingest(pipeline_cmds::IngestArgs),
    /// Run the embedded Kafka broker alone (tansu, in memory) with the pipeline's topics; prints its address.
    Broker(pipeline_cmds::BrokerArgs),
    /// Send JSON lines to the pipeline's topic.
    Produce(pipeline_cmds::ProduceArgs),
    /// Send synthetic web-vitals events (some deliberately broken).
    Generate(pipeline_cmds::GenerateArgs),
    /// Benchmarks (`weir bench ingest`).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Inspect and maintain the lake.
    #[command(subcommand)]
    Lake(pipeline_cmds::LakeCommand),
    /// Aggregate date partitions of the lake (re-applying the plugin) and load them into the warehouse.
    Aggregate(batch_cmds::AggregateArgs),
    /// Ad-hoc SQL over the lake on the embedded engine: `lake` (rows as stored), `events` (the plugin applied).
    Query(batch_cmds::QueryArgs),
    /// Re-clean a date's files with the running plugin (one Delta commit replaces them), then re-aggregate it.
    Reprocess(batch_cmds::ReprocessArgs),
    /// The service: ingest, orchestrator and HTTP (/healthz /metrics /events /plugins/reload), plugin hot swap.
    Run(service_cmds::RunArgs),
    /// The whole pipeline on embedded defaults in one command (Kafka, plugin, lake, SQLite).
    Demo(service_cmds::DemoArgs),
    /// S3 events and commit-log polling → leased, retried, checkpointed aggregation runs.
    Orchestrate(orchestrate_cmds::OrchestrateArgs),
    /// Look at the warehouse.
    #[command(subcommand)]
    Warehouse(batch_cmds::WarehouseCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Kafka (embedded broker) → decode → plugin → Parquet, beside decoding alone, with peak memory.
    Ingest(pipeline_cmds::BenchIngestArgs),
    /// Aggregation of a generated lake (default 5 million events), beside DuckDB.
    Aggregate(batch_cmds::BenchAggregateArgs),
}

/// Set up `tracing` on stderr.
pub fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "warn,weir=info",
        1 => "info,weir=debug",
        _ => "debug,weir=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Run one command.
/// The async runtime of commands that need one.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // one worker per core (the batch engine's queries use every one)
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugin(command) => plugin::run(command),
        Command::Validate(args) => pipeline_cmds::validate(args),
        Command::Ingest(args) => pipeline_cmds::run_ingest(args),
        Command::Broker(args) => pipeline_cmds::run_broker(args),
        Command::Produce(args) => pipeline_cmds::run_produce(args),
        Command::Generate(args) => pipeline_cmds::run_generate(args),
        Command::Lake(command) => pipeline_cmds::run_lake(command),
        Command::Bench(BenchCommand::Ingest(args)) => pipeline_cmds::run_bench_ingest(args),
        Command::Bench(BenchCommand::Aggregate(args)) => batch_cmds::run_bench_aggregate(args),
        Command::Run(args) => service_cmds::run_service(args),
        Command::Demo(args) => service_cmds::run_demo(args),
        Command::Orchestrate(args) => orchestrate_cmds::run(args),
        Command::Aggregate(args) => batch_cmds::run_aggregate(args),
        Command::Query(args) => batch_cmds::run_query(args),
        Command::Reprocess(args) => batch_cmds::run_reprocess(args),
        Command::Warehouse(command) => batch_cmds::run_warehouse(command),
    }
}
