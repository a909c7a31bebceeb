//! `weir bench aggregate`: builds a lake of generated events (through the
//! decoder and the plugin, as ingest writes it), times `weir aggregate`
//! over it, and in the same run times DuckDB computing the same figures
//! with SQL over the same Parquet files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::bench_ingest::{reset_peak, rss_mib};
use super::generate::{Generator, GeneratorOptions};
use crate::batch::{BatchError, BatchJob, BatchOptions};
use crate::decode::JsonDecoder;
use crate::lake::{
    FileMetadata, Lake, LakeFile, PartitionFlush, Provenance, Resume, SchemaChange, StagedFile,
    dead_letter_schema, encode_parquet, split_by_partition,
};
use crate::pipeline::Pipeline;
use crate::plugin::{PluginEngine, PluginRunner};

use crate::aggregate::Selection;

/// One timed phase.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// wall time in seconds.
    pub seconds: f64,
    /// lake rows per second.
    pub rows_per_sec: f64,
    /// aggregate rows produced.
    pub groups: usize,
    /// peak resident memory of the phase, MiB (weir only).
    pub peak_rss_mib: Option<f64>,
    /// of `seconds`, the load into the warehouse (weir only; DuckDB loads nothing).
    pub load_seconds: Option<f64>,
    /// bytes the engine spilled to disk (weir only).
    pub spilled_bytes: Option<u64>,
}

/// What `weir bench aggregate` reports.
#[derive(Clone, Debug, Serialize)]
pub struct AggregateBenchReport {
    /// generated events.
    pub events: u64,
    /// rows in the lake (kept by the plugin).
    pub lake_rows: u64,
    /// date partitions.
    pub dates: usize,
    /// data files.
    pub files: usize,
    /// bytes of Parquet.
    pub lake_bytes: u64,
    /// seconds spent building the lake (not measured further).
    pub build_seconds: f64,
    /// `weir aggregate --all` into SQLite as configured: the plugin
    /// re-applied to files other digests wrote (none here: the bench's
    /// lake is written by the pipeline's own plugin).
    pub weir: Phase,
    /// the same with the plugin re-applied to every file
    /// (`aggregate.reapply_own_files = true`): what the plugin costs.
    pub weir_reapplying: Phase,
    /// DuckDB over the same files, when a Python with `duckdb` was given.
    pub duckdb: Option<Phase>,
    /// weir's time over DuckDB's.
    pub ratio_to_duckdb: Option<f64>,
    /// weir's time less its warehouse load over DuckDB's (DuckDB loads
    /// nothing): the engines side by side.
    pub ratio_without_load: Option<f64>,
    /// threads each engine was given.
    pub threads: usize,
    /// aggregate rows where weir's figures differ from DuckDB's (counts
    /// exactly, floats beyond 1e-9 relative; a missing or extra group
    /// counts too), when DuckDB ran and the warehouse is SQLite.
    pub mismatches: Option<usize>,
}

/// Build the lake in `lake_dir` (unless it already holds one), then time
/// weir and DuckDB over it.
pub async fn bench_aggregate(
    pipeline: &Pipeline,
    events: u64,
    days: u32,
    lake_dir: &Path,
    duckdb_python: Option<PathBuf>,
    warehouse_url: Option<String>,
) -> Result<AggregateBenchReport, BatchError> {
    let mut p = pipeline.clone();
    p.config.lake.url = lake_dir.display().to_string();
    let mut warehouse = p
        .config
        .warehouse
        .clone()
        .ok_or_else(|| BatchError::Config {
            file: p.file.display().to_string(),
            message: "no [warehouse] section".into(),
        })?;
    warehouse.url = warehouse_url
        .unwrap_or_else(|| format!("sqlite://{}", lake_dir.join("bench-warehouse.db").display()));
    p.config.warehouse = Some(warehouse);
    let mut lake = Lake::open(&p.config.lake, &p.config.name)?;
    let started = Instant::now();
    lake.refresh().await?;
    if lake.data().version().is_none() {
        let (pc, lake2) = (p.clone(), Lake::open(&p.config.lake, &p.config.name)?);
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || build_lake(&pc, lake2, events, days, &handle))
            .await
            .expect("lake builder")?;
        lake.refresh().await?;
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let files: Vec<LakeFile> = lake.data().files(&p.config.lake.partition_by, None).await?;
    let lake_rows: u64 = files.iter().map(|f| f.rows).sum();
    let dates = files
        .iter()
        .filter_map(|f| f.partition_value.as_ref())
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    let timed = |reapply_own_files: bool| {
        let mut p = p.clone();
        if let Some(a) = p.config.aggregate.as_mut() {
            a.reapply_own_files = reapply_own_files;
        }
        async move {
            let job = Arc::new(BatchJob::open(&p).await?);
            reset_peak();
            let started = Instant::now();
            let summary = job
                .run(
                    &BatchOptions {
                        selection: Selection::All,
                        replace_empty: false,
                    },
                    Arc::new(|_: &crate::aggregate::Progress| {}),
                )
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            let spilled = summary
                .partitions
                .iter()
                .filter_map(|p| p.report.as_ref())
                .map(|r| r.spilled_bytes)
                .sum();
            Ok::<_, BatchError>(Phase {
                seconds,
                rows_per_sec: summary.rows_read as f64 / seconds,
                groups: summary.rows_loaded,
                peak_rss_mib: Some(rss_mib("VmHWM")),
                load_seconds: Some(summary.load_ms as f64 / 1e3),
                spilled_bytes: Some(spilled),
            })
        }
    };
    let weir_reapplying = timed(true).await?;
    let weir = timed(false).await?;
    let threads = match p.config.aggregate.as_ref().map_or(0, |a| a.workers) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (duckdb, duckdb_rows) = match duckdb_python {
        Some(python) => {
            let (phase, rows) =
                run_duckdb(&python, lake_dir, lake_rows, &p, threads).map_err(|message| {
                    BatchError::Config {
                        file: "duckdb".into(),
                        message,
                    }
                })?;
            (Some(phase), Some(rows))
        }
        None => (None, None),
    };
    let ratio_to_duckdb = duckdb.as_ref().map(|d| weir.seconds / d.seconds);
    let ratio_without_load = duckdb
        .as_ref()
        .map(|d| (weir.seconds - weir.load_seconds.unwrap_or(0.0)) / d.seconds);
    let mismatches = match (&duckdb_rows, p.config.warehouse.as_ref()) {
        (Some(theirs), Some(w)) => match w.url.strip_prefix("sqlite://") {
            Some(path) => Some(compare_with_sqlite(Path::new(path), &w.table, &p, theirs)?),
            None => None,
        },
        _ => None,
    };
    Ok(AggregateBenchReport {
        events,
        lake_rows,
        dates,
        files: files.len(),
        lake_bytes: files.iter().map(|f| f.bytes).sum(),
        build_seconds,
        weir,
        weir_reapplying,
        duckdb,
        ratio_to_duckdb,
        ratio_without_load,
        threads,
        mismatches,
    })
}

/// Rows of weir's SQLite warehouse table that differ from DuckDB's `theirs`
/// (both in group-by order; the same columns in the same order).
fn compare_with_sqlite(
    path: &Path,
    table: &str,
    p: &Pipeline,
    theirs: &[Vec<serde_json::Value>],
) -> Result<usize, BatchError> {
    let fail = |e: rusqlite::Error| BatchError::Config {
        file: path.display().to_string(),
        message: e.to_string(),
    };
    let order = p
        .config
        .aggregate
        .as_ref()
        .map(|a| a.group_by.join(", "))
        .unwrap_or_default();
    let conn = rusqlite::Connection::open(path).map_err(fail)?;
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
        .map_err(fail)?;
    let n = stmt.column_count();
    let ours: Vec<Vec<rusqlite::types::Value>> = stmt
        .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .map_err(fail)?
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    let same = |a: &rusqlite::types::Value, b: &serde_json::Value| {
        use rusqlite::types::Value as V;
        match (a, b) {
            (V::Null, serde_json::Value::Null) => true,
            (V::Integer(x), b) => b.as_f64() == Some(*x as f64),
            (V::Real(x), b) => b
                .as_f64()
                .is_some_and(|y| (x - y).abs() <= 1e-9 * y.abs().max(1.0)),
            (V::Text(x), serde_json::Value::String(y)) => x == y,
            _ => false,
        }
    };
    let mut mismatches = ours.len().abs_diff(theirs.len());
    for (a, b) in ours.iter().zip(theirs) {
        if a.len() != b.len() || !a.iter().zip(b).all(|(x, y)| same(x, y)) {
            mismatches += 1;
        }
    }
    Ok(mismatches)
}

/// Generate `events` over `days`, decode, run the plugin and write the lake
/// as ingest would: files of at most 500 000 rows per date, one Delta
/// commit per file.
fn build_lake(
    p: &Pipeline,
    mut lake: Lake,
    events: u64,
    days: u32,
    rt: &tokio::runtime::Handle,
) -> Result<(), BatchError> {
    let engine = PluginEngine::new(p.config.plugin.limits.clone())?;
    let plugin = crate::ingest::load_plugin(p, &engine, rt).map_err(|e| BatchError::Config {
        file: p.file.display().to_string(),
        message: e.to_string(),
    })?;
    let mut runner = PluginRunner::new(engine, plugin.clone(), &p.schema, &p.plugin_config())?;
    rt.block_on(lake.ensure_tables(
        runner.output_schema().arrow(),
        &dead_letter_schema(),
        SchemaChange::Refuse,
    ))?;
    let column = runner
        .output_schema()
        .arrow()
        .index_of(&p.config.lake.partition_by)
        .map_err(|_| BatchError::Config {
            file: p.file.display().to_string(),
            message: format!(
                "the plugin's output has no `{}` column",
                p.config.lake.partition_by
            ),
        })?;
    let mut generator = Generator::new(GeneratorOptions {
        days,
        bad_share: 0.01,
        ..Default::default()
    });
    let mut decoder = JsonDecoder::new(&p.schema, 65_536);
    let mut pending: std::collections::BTreeMap<String, Vec<arrow::record_batch::RecordBatch>> =
        Default::default();
    let mut chains: std::collections::BTreeMap<String, (i32, i64)> = Default::default();
    let mut line = String::new();
    let stored: Vec<usize> = (0..runner.output_schema().fields().len())
        .filter(|i| *i != column)
        .collect();
    let mut flush = |date: &str,
                     batches: Vec<arrow::record_batch::RecordBatch>,
                     chains: &mut std::collections::BTreeMap<String, (i32, i64)>|
     -> Result<(), BatchError> {
        let n = chains.len() as i32;
        let (partition, chain) = *chains.entry(date.to_string()).or_insert((n, 0));
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let last = chain + rows as i64 - 1;
        let meta = FileMetadata {
            plugin_digest: plugin.digest.clone(),
            topic: "bench".into(),
            partition,
            first_offset: chain,
            last_offset: last,
            writer_token: FileMetadata::new_token(),
        };
        // Delta keeps the partition value in the log, not in the file
        let batches: Vec<_> = batches
            .iter()
            .map(|b| b.project(&stored).expect("columns in range"))
            .collect();
        let bytes = encode_parquet(&batches, (&p.config.lake).into(), &meta).map_err(|e| {
            BatchError::Config {
                file: "bench".into(),
                message: e.to_string(),
            }
        })?;
        let path = meta.data_path(&p.config.lake.partition_by, date);
        let file = StagedFile {
            path: path.clone(),
            partition_value: Some(date.into()),
            rows: rows as u64,
            bytes: bytes.len() as u64,
        };
        rt.block_on(lake.data().location().put(&path, bytes))
            .map_err(crate::lake::LakeError::from)?;
        let mut flush = [PartitionFlush {
            topic: "bench".into(),
            partition,
            expected: Resume {
                data: (chain > 0).then_some(chain - 1),
                dead: None,
            },
            last_offset: last,
            data_files: vec![file],
            dead_files: Vec::new(),
        }];
        let provenance = Provenance {
            plugin_digest: plugin.digest.clone(),
            counts: [("read", rows as u64), ("kept", rows as u64)]
                .into_iter()
                .collect(),
        };
        rt.block_on(lake.commit(&mut flush, &provenance))?;
        chains.insert(date.to_string(), (partition, last + 1));
        Ok(())
    };
    for i in 0..events {
        generator.next_into(&mut line);
        let _ = decoder.push(line.as_bytes());
        if decoder.len() >= 65_536 || i + 1 == events {
            let batch = decoder.flush();
            let processed = runner.process(&batch);
            for (date, part) in split_by_partition(&processed.batch, column) {
                let list = pending.entry(date.clone()).or_default();
                list.push(part);
                if list.iter().map(|b| b.num_rows()).sum::<usize>() >= 500_000 {
                    let batches = pending.remove(&date).unwrap_or_default();
                    flush(&date, batches, &mut chains)?;
                }
            }
        }
    }
    for (date, batches) in std::mem::take(&mut pending) {
        flush(&date, batches, &mut chains)?;
    }
    rt.block_on(lake.finish_reads(std::time::Duration::from_secs(10)))?;
    Ok(())
}

/// Time DuckDB computing the same figures over the lake's Parquet files.
fn run_duckdb(
    python: &Path,
    lake_dir: &Path,
    lake_rows: u64,
    p: &Pipeline,
    threads: usize,
) -> Result<(Phase, Vec<Vec<serde_json::Value>>), String> {
    let a = p
        .config
        .aggregate
        .as_ref()
        .ok_or("no [aggregate] section")?;
    let distinct = a.distinct.as_deref().unwrap_or("event_id");
    let mut select = vec![
        a.group_by.join(", "),
        format!("count(DISTINCT {distinct}) AS {}", a.events_column),
    ];
    for m in &a.metrics {
        for s in &m.stats {
            let c = &m.column;
            select.push(match s.as_str() {
                "samples" => format!("count({c})"),
                "avg" => format!("avg({c})"),
                "min" => format!("min({c})"),
                "max" => format!("max({c})"),
                pct => format!(
                    "quantile_cont({c}, {})",
                    pct.trim_start_matches('p').parse::<f64>().unwrap_or(50.0) / 100.0
                ),
            });
        }
    }
    // the table's files (a fresh table: every file on disk is committed);
    // the partition column comes from the `event_date=...` directories
    let glob = lake_dir.join("*=*/*.parquet");
    let sql = format!(
        "WITH d AS (SELECT DISTINCT ON ({part}, {key}) * FROM read_parquet('{glob}', hive_partitioning = true)) \
         SELECT {select} FROM d GROUP BY {group} ORDER BY {group}",
        part = p.config.lake.partition_by,
        key = distinct,
        glob = glob.display(),
        select = select.join(", "),
        group = a.group_by.join(", "),
    );
    let script = format!(
        "import duckdb, json, time\ncon = duckdb.connect()\ncon.execute('SET enable_progress_bar = false')\ncon.execute('SET threads = {threads}')\nt = time.perf_counter()\nrows = con.execute({sql:?}).fetchall()\nseconds = time.perf_counter() - t\nprint(json.dumps({{'seconds': seconds, 'groups': len(rows), 'rows': [[str(v) if hasattr(v, 'isoformat') else v for v in r] for r in rows]}}))\n"
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("duckdb: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("duckdb output: {e}"))?;
    let seconds = v["seconds"].as_f64().unwrap_or(f64::NAN);
    let rows = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r.as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    Ok((
        Phase {
            seconds,
            rows_per_sec: lake_rows as f64 / seconds,
            groups: v["groups"].as_u64().unwrap_or(0) as usize,
            peak_rss_mib: None,
            load_seconds: None,
            spilled_bytes: None,
        },
        rows,
    ))
}
