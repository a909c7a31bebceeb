//! `weir aggregate` and `weir warehouse show`: the batch CLI.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, Subcommand};

use super::pipeline_cmds::PipelineArgs;
use super::runtime;
use weir::aggregate::{Progress, Selection};
use weir::batch::{BatchJob, BatchOptions, BatchSummary, PartitionStatus};
use weir::warehouse::{Shown, Warehouse};

#[derive(Debug, Args)]
pub struct AggregateArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// A date partition to aggregate (YYYY-MM-DD); repeatable.
    #[arg(long = "date", value_name = "DATE", conflicts_with_all = ["from", "all"])]
    dates: Vec<NaiveDate>,
    /// First date of a range (with --to).
    #[arg(long, requires = "to", conflicts_with = "all")]
    from: Option<NaiveDate>,
    /// Last date of a range, inclusive (with --from).
    #[arg(long, requires = "from")]
    to: Option<NaiveDate>,
    /// Every date the commit log names.
    #[arg(long)]
    all: bool,
    /// For selected dates without data, delete their warehouse rows.
    #[arg(long)]
    replace_empty: bool,
    /// With `aggregate.engine = "warehouse"`: stage the dates as a load
    /// would (Redshift: manifests and re-cleaned files on S3) and print the
    /// statements the load would run, without running them.
    #[arg(long)]
    explain: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WarehouseCommand {
    /// Print the aggregated rows as a table: the top N per date.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Only this date.
    #[arg(long)]
    date: Option<NaiveDate>,
    /// Rows per date.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Column ordering the rows of a date (descending).
    #[arg(long, default_value = "events")]
    order_by: String,
    /// Only rows counting at least this many events.
    #[arg(long, default_value_t = 0)]
    min_events: i64,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
}

/// The dates `--date`, `--from/--to` or `--all` select; `None` when none is given.
fn selection(
    dates: &[NaiveDate],
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    all: bool,
) -> anyhow::Result<Option<Selection>> {
    Ok(match (dates, from, to, all) {
        (_, _, _, true) => Some(Selection::All),
        (_, Some(from), Some(to), _) => {
            anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
            Some(Selection::Range(from, to))
        }
        ([], ..) => None,
        (dates, ..) => Some(Selection::Dates(dates.to_vec())),
    })
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The query: over `lake` (rows as stored) and `events` (the plugin
    /// applied, as the aggregation sees them).
    sql: String,
    /// A date partition to read (YYYY-MM-DD); repeatable. Default: every date.
    #[arg(long = "date", value_name = "DATE", conflicts_with_all = ["from"])]
    dates: Vec<NaiveDate>,
    /// First date of a range (with --to).
    #[arg(long, requires = "to")]
    from: Option<NaiveDate>,
    /// Last date of a range, inclusive (with --from).
    #[arg(long, requires = "from")]
    to: Option<NaiveDate>,
    /// Print the rows as JSON (one array of objects).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print the rows as CSV with a header.
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, Args)]
pub struct ReprocessArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// The date partition to re-clean (YYYY-MM-DD).
    #[arg(long)]
    date: NaiveDate,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `weir reprocess P --date D`: re-clean a date's files with the running
/// plugin (one Delta commit replaces them), then re-aggregate the date.
pub fn run_reprocess(args: ReprocessArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let report = runtime()?.block_on(async {
        let job = Arc::new(BatchJob::open(&pipeline).await?);
        job.reprocess(args.date, Arc::new(|_: &Progress| {})).await
    })?;
    if args.json {
        weir::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        weir::outln!(
            "{}: {} files ({} rows, plugins {}) replaced by {} files ({} rows) of plugin {} in table version {}; {} aggregate rows loaded",
            report.date,
            report.files_removed,
            report.rows_read,
            report.previous_digests.join(","),
            report.files_added,
            report.rows_written,
            &report.plugin_digest[..report.plugin_digest.len().min(8)],
            report.version,
            report.load.rows_loaded
        );
    }
    Ok(if report.load.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `weir query P "SQL"`: ad-hoc SQL over the lake on the embedded engine.
pub fn run_query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let selection = selection(&args.dates, args.from, args.to, false)?.unwrap_or(Selection::All);
    let result = runtime()?.block_on(weir::batch::query_lake(&pipeline, &args.sql, &selection))?;
    let mut out = Vec::new();
    if args.json {
        let mut writer = arrow_json::ArrayWriter::new(&mut out);
        for batch in &result.batches {
            writer.write(batch)?;
        }
        writer.finish()?;
        out.push(b'\n');
    } else if args.csv {
        let mut writer = arrow::csv::Writer::new(&mut out);
        for batch in &result.batches {
            writer.write(batch)?;
        }
    } else {
        let table = arrow::util::pretty::pretty_format_batches(&result.batches)?;
        out.extend_from_slice(format!("{table}\n").as_bytes());
    }
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_aggregate(args: AggregateArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let Some(selection) = selection(&args.dates, args.from, args.to, args.all)? else {
        anyhow::bail!("say which dates: --date D (repeatable), --from D --to D, or --all")
    };
    let rt = runtime()?;
    let json = args.json;
    if args.explain {
        let plan = rt.block_on(async {
            let job = Arc::new(BatchJob::open(&pipeline).await?);
            job.explain_pushdown(&BatchOptions {
                selection,
                replace_empty: args.replace_empty,
            })
            .await
        })?;
        if json {
            weir::outln!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            for staged in &plan.staged {
                weir::outln!(
                    "-- {}: {} files ({:?}) listed in {}",
                    staged.date,
                    staged.files,
                    staged.from,
                    staged.manifest_url
                );
            }
            for statement in &plan.statements {
                weir::outln!("{statement};\n");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let summary = rt.block_on(async {
        let job = Arc::new(BatchJob::open(&pipeline).await?);
        let progress = Arc::new(move |p: &Progress| {
            if !json {
                weir::errln!(
                    "[{}/{}] {} done (so far: {} files, {} rows)",
                    p.done,
                    p.total,
                    p.date,
                    p.files,
                    p.rows
                );
            }
        });
        let options = BatchOptions {
            selection,
            replace_empty: args.replace_empty,
        };
        job.run(&options, progress).await
    })?;
    if json {
        weir::outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.failed() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(s: &BatchSummary) {
    for p in &s.partitions {
        match (&p.status, &p.report) {
            (PartitionStatus::Loaded, Some(r)) => {
                let dropped: u64 = r.dropped.values().sum();
                let rejected: u64 = r.rejected.values().sum();
                weir::outln!(
                    "{}: loaded {} rows from {} files, {} rows read ({} duplicates, {} dropped, {} rejected by the plugin)",
                    p.date,
                    r.groups,
                    r.files,
                    r.rows_read,
                    r.duplicates,
                    dropped,
                    rejected
                );
            }
            (PartitionStatus::NoData, _) => weir::outln!(
                "{}: no data (no committed files); its warehouse rows are left as they are (--replace-empty deletes them)",
                p.date
            ),
            (PartitionStatus::ReplacedEmpty, _) => weir::outln!(
                "{}: no data; its warehouse rows were deleted (--replace-empty)",
                p.date
            ),
            (_, _) => weir::outln!(
                "{}: FAILED: {}",
                p.date,
                p.error.as_deref().unwrap_or("unknown")
            ),
        }
    }
    weir::outln!(
        "summary: {} partitions ({} failed), {} files, {} rows read, {} rows loaded into {} table {} in {:.1} s (load {}, plugin {})",
        s.partitions.len(),
        s.failed(),
        s.files,
        s.rows_read,
        s.rows_loaded,
        s.warehouse,
        s.table,
        s.elapsed_ms as f64 / 1000.0,
        s.load_id,
        &s.plugin_digest[..12.min(s.plugin_digest.len())]
    );
}

pub fn run_warehouse(command: WarehouseCommand) -> anyhow::Result<ExitCode> {
    let WarehouseCommand::Show(args) = command;
    let pipeline = args.pipeline.load()?;
    let config = pipeline
        .config
        .warehouse
        .clone()
        .with_context(|| format!("{}: no [warehouse] section", pipeline.file.display()))?;
    let warehouse = Warehouse::open(&config, &pipeline.config.lake)?;
    let rt = runtime()?;
    let events_column = pipeline
        .config
        .aggregate
        .as_ref()
        .map_or("events".to_string(), |a| a.events_column.clone());
    let min = (args.min_events > 0).then_some((events_column.as_str(), args.min_events));
    let shown = rt.block_on(warehouse.show(
        &pipeline.config.lake.partition_by,
        args.date,
        &args.order_by,
        args.top,
        min,
    ))?;
    if args.json {
        weir::outln!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print_table(&shown);
    }
    Ok(ExitCode::SUCCESS)
}

/// Print rows as an aligned text table (numbers right-aligned).
pub fn print_table(shown: &Shown) {
    if shown.rows.is_empty() {
        weir::outln!("(no rows)");
        return;
    }
    let cells: Vec<Vec<String>> = shown
        .rows
        .iter()
        .map(|r| r.iter().map(ToString::to_string).collect())
        .collect();
    let widths: Vec<usize> = (0..shown.columns.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .chain([shown.columns[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..shown.columns.len())
        .map(|c| {
            shown.rows.iter().all(|r| {
                matches!(
                    r[c],
                    weir::warehouse::Value::Int(_)
                        | weir::warehouse::Value::Float(_)
                        | weir::warehouse::Value::Null
                )
            })
        })
        .collect();
    let line = |values: Vec<&str>| {
        let parts: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if numeric[c] {
                    format!("{v:>w$}", w = widths[c])
                } else {
                    format!("{v:<w$}", w = widths[c])
                }
            })
            .collect();
        weir::outln!("{}", parts.join("  ").trim_end());
    };
    line(shown.columns.iter().map(String::as_str).collect());
    weir::outln!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
}

#[derive(Debug, Args)]
pub struct BenchAggregateArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// How many synthetic events in the lake.
    #[arg(long, default_value_t = 5_000_000)]
    events: u64,
    /// Over how many days (date partitions).
    #[arg(long, default_value_t = 5)]
    days: u32,
    /// Keep (and reuse) the lake in this directory instead of a temporary one.
    #[arg(long)]
    lake: Option<std::path::PathBuf>,
    /// A Python interpreter with the `duckdb` package, to time DuckDB beside weir.
    #[arg(long)]
    duckdb_python: Option<std::path::PathBuf>,
    /// Load into this warehouse instead of a SQLite file beside the lake.
    #[arg(long)]
    warehouse_url: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run_bench_aggregate(args: BenchAggregateArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let temp = tempfile::tempdir().context("temporary lake directory")?;
    let dir = args
        .lake
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let rt = runtime()?;
    let r = rt.block_on(weir::tools::bench_aggregate::bench_aggregate(
        &pipeline,
        args.events,
        args.days,
        &dir,
        args.duckdb_python.clone(),
        args.warehouse_url.clone(),
    ))?;
    if args.json {
        weir::outln!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    weir::outln!(
        "lake            {} rows ({} events generated) in {} files over {} dates, {:.1} MB of Parquet (built in {:.1} s)",
        r.lake_rows,
        r.events,
        r.files,
        r.dates,
        r.lake_bytes as f64 / 1e6,
        r.build_seconds
    );
    let line = |name: &str, p: &weir::tools::bench_aggregate::Phase| {
        let rss = p
            .peak_rss_mib
            .map(|m| format!(", peak RSS {m:.0} MiB"))
            .unwrap_or_default();
        let load = p
            .load_seconds
            .map(|l| format!(" ({l:.2} s of it the load)"))
            .unwrap_or_default();
        let spilled = p
            .spilled_bytes
            .filter(|b| *b > 0)
            .map(|b| format!(", spilled {:.0} MiB", b as f64 / 1048576.0))
            .unwrap_or_default();
        weir::outln!(
            "{name:<28} {:>7.2} s{load}  {:>11.0} rows/s  {} groups{rss}{spilled}",
            p.seconds,
            p.rows_per_sec,
            p.groups
        );
    };
    line("weir (plugin on every file)", &r.weir_reapplying);
    line("weir", &r.weir);
    if let Some(d) = &r.duckdb {
        line("duckdb", d);
    }
    if let Some(x) = r.ratio_to_duckdb {
        weir::outln!(
            "ratio                        weir = {x:.2} x DuckDB's time ({} threads each)",
            r.threads
        );
    }
    if let Some(x) = r.ratio_without_load {
        weir::outln!("ratio without the load       weir = {x:.2} x DuckDB's time");
    }
    if let Some(m) = r.mismatches {
        weir::outln!("values                       {m} aggregate rows differ from DuckDB's");
    }
    Ok(ExitCode::SUCCESS)
}
