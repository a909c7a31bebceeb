//! The Delta table's own guarantees: compaction changes no aggregate and
//! triggers no re-run, and reading the log stays bounded (a checkpoint plus
//! a short tail) however many commits the table has, counted request by
//! request through an instrumented object store.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use weir::lake::{Lake, PartitionFlush, Provenance, Resume, StagedFile, TableKind};
use weir::orchestrate::{Orchestrator, RunOutcome};

use crate::batch::batch_events;
use crate::support::*;

/// An object store that counts what it is asked, and can hold reads back.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicUsize,
    lists: AtomicUsize,
    /// whether reads go through (`false`: they wait until it is `true`).
    reads_open: tokio::sync::watch::Sender<bool>,
}

impl Counting {
    fn reset(&self) -> (usize, usize) {
        (
            self.gets.swap(0, Ordering::SeqCst),
            self.lists.swap(0, Ordering::SeqCst),
        )
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut open = self.reads_open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A lake of `pipeline` opened through a counting store.
fn counted_lake(p: &weir::pipeline::Pipeline) -> (Lake, Arc<Counting>) {
    let location = weir::objstore::Location::open(&p.config.lake.url, &p.config.lake.s3).unwrap();
    let counting = Arc::new(Counting {
        inner: location.store().clone(),
        gets: AtomicUsize::new(0),
        lists: AtomicUsize::new(0),
        reads_open: tokio::sync::watch::Sender::new(true),
    });
    let location = location.with_store(counting.clone());
    (
        Lake::open_at(&p.config.lake, &p.config.name, location).unwrap(),
        counting,
    )
}

/// Commits of the bounded-reads test.
const COMMITS: usize = 1000;

#[test]
fn after_a_thousand_commits_planning_and_polling_read_a_checkpoint_and_a_short_tail() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        "unused:9092",
        "bounded",
        dir.path().join("lake").to_str().unwrap(),
        "[lake]\ncheckpoint_interval = 50\n",
    );
    let p = weir::pipeline::Pipeline::load(&pipeline, &[]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // a table with the events' columns and the date; one tiny file per commit
    let schema = crate::support::events_table_schema(&p);
    let mut writer = Lake::open(&p.config.lake, &p.config.name).unwrap();
    rt.block_on(writer.ensure_tables(
        &schema,
        &weir::lake::dead_letter_schema(),
        weir::lake::SchemaChange::Refuse,
    ))
    .unwrap();
    let mut decoder = weir::decode::JsonDecoder::new(&p.schema, 4);
    for line in good_events("b", 3) {
        decoder.push(line.as_bytes()).unwrap();
    }
    let meta = weir::lake::FileMetadata {
        plugin_digest: "0".repeat(64),
        topic: "t".into(),
        partition: 0,
        first_offset: 0,
        last_offset: 2,
        writer_token: String::new(),
    };
    let bytes = weir::lake::encode_parquet(
        &[decoder.flush()],
        weir::lake::ParquetOptions::new("zstd", 1024),
        &meta,
    )
    .unwrap();
    let dates = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"];
    let provenance = Provenance::default();
    for i in 0..COMMITS {
        let date = dates[i % dates.len()];
        let path = format!("event_date={date}/f{i:05}.parquet");
        rt.block_on(writer.data().location().put(&path, bytes.clone()))
            .unwrap();
        let mut flush = [PartitionFlush {
            topic: "t".into(),
            partition: 0,
            expected: Resume {
                data: (i > 0).then(|| i as i64 * 3 - 1),
                dead: None,
            },
            last_offset: i as i64 * 3 + 2,
            data_files: vec![StagedFile {
                path,
                partition_value: Some(date.into()),
                rows: 3,
                bytes: bytes.len() as u64,
            }],
            dead_files: Vec::new(),
        }];
        rt.block_on(writer.commit(&mut flush, &provenance)).unwrap();
    }
    let checkpoints = std::fs::read_dir(dir.path().join("lake/_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.parquet")
        })
        .count();
    assert!(checkpoints >= COMMITS / 50 - 1, "{checkpoints} checkpoints");

    // a reader that never saw the table: a checkpoint plus the tail, not 1000 commits
    let (mut lake, counting) = counted_lake(&p);
    let table = lake.table_mut(TableKind::Data);
    rt.block_on(table.refresh()).unwrap();
    assert_eq!(table.version(), Some(COMMITS as i64));
    let plans = rt
        .block_on(weir::aggregate::plan(
            table,
            "event_date",
            &weir::aggregate::Selection::Dates(vec!["2026-11-21".parse().unwrap()]),
        ))
        .unwrap();
    assert_eq!(plans["2026-11-21"].files.len(), COMMITS / 4);
    let (gets, lists) = counting.reset();
    eprintln!("planning one date after {COMMITS} commits: {gets} GETs, {lists} LISTs");
    assert!(gets <= 60, "{gets} GET requests to plan one date");
    assert!(lists <= 5, "{lists} LIST requests to plan one date");

    // one more commit, then one poll: the new commit, not the history
    let mut flush = [PartitionFlush {
        topic: "t".into(),
        partition: 0,
        expected: Resume {
            data: Some(COMMITS as i64 * 3 - 1),
            dead: None,
        },
        last_offset: COMMITS as i64 * 3 + 2,
        data_files: Vec::new(),
        dead_files: Vec::new(),
    }];
    rt.block_on(writer.commit(&mut flush, &provenance)).unwrap();
    let seen = table.version();
    rt.block_on(table.refresh()).unwrap();
    let changes = rt
        .block_on(table.changes_since("event_date", seen))
        .unwrap();
    assert_eq!(changes.version, Some(COMMITS as i64 + 1));
    let (gets, lists) = counting.reset();
    eprintln!("one poll after {COMMITS} commits: {gets} GETs, {lists} LISTs");
    assert!(gets <= 4, "{gets} GET requests for one poll");
    assert!(lists <= 2, "{lists} LIST requests for one poll");

    // a writer's steady commit: no listing of the whole log (expired
    // entries go when a checkpoint is written), and no read of its own
    // commit back before it returns (delta-rs reads it back, a LIST from
    // the checkpoint and the new commit twice, in a task of its own)
    let mut last = COMMITS as i64 * 3 + 2;
    let mut commit = |lake: &mut Lake| {
        let mut flush = [PartitionFlush {
            topic: "t".into(),
            partition: 0,
            expected: Resume {
                data: Some(last),
                dead: None,
            },
            last_offset: last + 3,
            data_files: Vec::new(),
            dead_files: Vec::new(),
        }];
        last += 3;
        rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                lake.commit(&mut flush, &provenance),
            )
            .await
        })
    };
    // with reads open: this lake loads its dead-letter table, whose first
    // `txn` question (in the commit) replays the log; then the commit's
    // read-back finishes
    rt.block_on(lake.refresh()).unwrap();
    commit(&mut lake)
        .expect("a commit with reads open")
        .unwrap();
    rt.block_on(lake.refresh()).unwrap();
    // reads held back: the commit still returns, having read nothing
    counting.reads_open.send_replace(false);
    counting.reset();
    let report = commit(&mut lake)
        .expect("a commit returns without reading its commit back")
        .unwrap();
    let (gets, lists) = counting.reset();
    eprintln!("one steady commit after {COMMITS} commits: {gets} GETs, {lists} LISTs");
    assert_eq!(report.data_version, Some(COMMITS as i64 + 3));
    assert_eq!(gets, 0, "{gets} GET requests before the commit returned");
    // its own LIST for the latest version, and the read-back's first
    assert!(lists <= 2, "{lists} LIST requests for one commit");
    assert!(
        dir.path()
            .join(format!("lake/_delta_log/{:020}.json", COMMITS + 3))
            .exists()
    );
    // reads open again: the next commit takes the snapshot read back, and
    // an independent reader finds both commits
    counting.reads_open.send_replace(true);
    let report = commit(&mut lake).expect("the next commit").unwrap();
    assert_eq!(report.data_version, Some(COMMITS as i64 + 4));
    let found = read_delta(dir.path().join("lake").to_str().unwrap(), "", 0, &[]);
    assert_eq!(found["version"], COMMITS + 4, "{found}");
    rt.block_on(lake.finish_reads(std::time::Duration::from_secs(30)))
        .unwrap();
}

#[test]
fn optimize_compacts_a_date_without_changing_aggregates_or_triggering_a_run() {
    let rig = rig(
        "compact",
        1,
        None,
        "[ingest]\nflush_rows = 20\nbatch_rows = 20\n[warehouse]\nurl = \"sqlite://wh.db\"\n[checkpoints]\nurl = \"checkpoints\"\n",
    );
    // one date in many small files: rounds of ingest (within one, rows
    // gather while a flush cycle is in flight, so the files it makes depend
    // on timing)
    for round in 0..6 {
        produce(
            &rig.kafka.brokers,
            "compact",
            &batch_events(&format!("o{round}-"), 200, Some(0)),
        );
        rig.drain();
    }
    let p = weir::pipeline::Pipeline::load(&rig.pipeline, &[]).unwrap();
    let files = |p: &weir::pipeline::Pipeline| {
        let mut lake = Lake::open(&p.config.lake, &p.config.name).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let table = lake.table_mut(TableKind::Data);
        rt.block_on(table.refresh()).unwrap();
        rt.block_on(table.files("event_date", None)).unwrap()
    };
    let before = files(&p);
    let date = before[0].partition_value.clone().unwrap();
    assert!(before.len() >= 6, "{} files", before.len());
    assert!(
        before
            .iter()
            .all(|f| f.partition_value.as_deref() == Some(&date))
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(weir::telemetry::Metrics::default());
    let orchestrator = rt
        .block_on(Orchestrator::open(&p, metrics.clone()))
        .unwrap();
    assert_eq!(
        rt.block_on(orchestrator.poll()).unwrap(),
        std::slice::from_ref(&date)
    );
    assert_eq!(
        rt.block_on(orchestrator.run_partition(&date, false))
            .unwrap(),
        RunOutcome::Loaded { attempts: 1 }
    );
    let warehouse = rig.dir.path().join("wh.db");
    let table = || {
        let conn = rusqlite::Connection::open(&warehouse).unwrap();
        let mut stmt = conn
            .prepare("SELECT * FROM page_metrics_daily ORDER BY event_date, page_url")
            .unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
    };
    let aggregated = table();
    assert!(!aggregated.is_empty());

    weir_ok(&mut weir_cmd(&[
        "lake",
        "optimize",
        rig.pipeline.to_str().unwrap(),
        "--date",
        &date,
    ]));
    let after = files(&p);
    assert!(after.len() <= 2, "{} files after optimize", after.len());
    assert_eq!(
        after.iter().map(|f| f.rows).sum::<u64>(),
        before.iter().map(|f| f.rows).sum::<u64>()
    );
    // the compaction changed no data: nothing to re-run, by poll or by event
    assert!(rt.block_on(orchestrator.poll()).unwrap().is_empty());
    // (an S3 notification of the OPTIMIZE commit names no date either)
    let optimize_version = crate::support::lake_version(&rig.pipeline);
    let mut lake = Lake::open(&p.config.lake, &p.config.name).unwrap();
    rt.block_on(lake.refresh()).unwrap();
    let touched = rt
        .block_on(lake.data().commit_dates("event_date", optimize_version))
        .unwrap();
    assert_eq!(touched, Some(Default::default()));
    assert_eq!(
        rt.block_on(orchestrator.run_partition(&date, false))
            .unwrap(),
        RunOutcome::Unchanged
    );
    // aggregating the compacted files gives the same rows
    weir_ok(&mut weir_cmd(&[
        "aggregate",
        rig.pipeline.to_str().unwrap(),
        "--date",
        &date,
    ]));
    assert_eq!(table(), aggregated);
    // and an independent reader sees the compacted files only, every row once
    let found = read_delta(rig.dir.path().join("lake").to_str().unwrap(), "o", 0, &[]);
    assert_eq!(
        found["rows"],
        before.iter().map(|f| f.rows).sum::<u64>(),
        "{found}"
    );
    assert_eq!(found["files"], after.len(), "{found}");
    assert_eq!(found["orphans_listed"], 0, "{found}");
}

/// A pipeline whose plugin keeps its input (the hostile fixture outside its
/// poison events: output schema = declared schema), so `fields`, the
/// declared schema, is what the table must take.
fn identity_pipeline(rig: &Rig, fields: &str, allow: bool) {
    let extra = format!(
        "[plugin]\npath = \"{}\"\nallow_schema_change = {allow}\n[schema]\nfields = [{fields}]\n",
        wasm("weir_fixture_hostile").display()
    );
    let template = std::fs::read_to_string(&rig.pipeline).unwrap();
    let mut doc: toml::Table = toml::from_str(&template).unwrap();
    let extra: toml::Table = toml::from_str(&extra).unwrap();
    for (section, values) in extra {
        for (k, v) in values.as_table().unwrap() {
            doc[&section]
                .as_table_mut()
                .unwrap()
                .insert(k.clone(), v.clone());
        }
    }
    std::fs::write(&rig.pipeline, toml::to_string(&doc).unwrap()).unwrap();
}

/// `weir ingest --drain` must fail at start; its stderr.
fn ingest_refused(rig: &Rig) -> String {
    let out = weir_cmd(&["ingest", rig.pipeline.to_str().unwrap(), "--drain"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

const BASE_FIELDS: &str = r#"{ name = "event_id", type = "string", nullable = false },
    { name = "event_date", type = "date", nullable = false },
    { name = "page_url", type = "string" }"#;

#[test]
fn a_new_plugin_version_adds_a_nullable_column_and_old_rows_read_it_as_null() {
    let rig = rig("evolve", 1, None, "");
    let k = &rig.kafka;
    identity_pipeline(&rig, BASE_FIELDS, false);
    let event = |i: usize, country: Option<&str>| {
        let country = country.map_or(String::new(), |c| format!(r#","country":"{c}""#));
        format!(
            r#"{{"event_id":"e{i}","event_date":"2026-11-2{}","page_url":"/p/{i}"{country}}}"#,
            i % 3
        )
    };
    produce(
        &k.brokers,
        "evolve",
        &(0..100).map(|i| event(i, None)).collect::<Vec<_>>(),
    );
    assert_eq!(rig.drain()["kept"], 100);
    let lake = rig.dir.path().join("lake");
    let lake = lake.to_str().unwrap();

    // the next version declares `country`: refused unless the pipeline allows it
    let with_country = format!("{BASE_FIELDS},\n    {{ name = \"country\", type = \"string\" }}");
    identity_pipeline(&rig, &with_country, false);
    produce(
        &k.brokers,
        "evolve",
        &(100..200).map(|i| event(i, Some("de"))).collect::<Vec<_>>(),
    );
    let stderr = ingest_refused(&rig);
    assert!(
        stderr.contains("no column `country`") && stderr.contains("plugin.allow_schema_change"),
        "{stderr}"
    );
    let before = python_tool("delta_columns.py", &[lake]);
    assert_eq!(before["rows"], 100, "{before}");

    // allowed: the table gains the column; old rows read it as null
    identity_pipeline(&rig, &with_country, true);
    assert_eq!(rig.drain()["kept"], 100);
    let after = python_tool("delta_columns.py", &[lake]);
    assert_eq!(after["rows"], 200, "{after}");
    assert_eq!(after["non_null"]["country"], 100, "{after}");
    assert_eq!(after["non_null"]["page_url"], 200, "{after}");
    let country = after["schema"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f[0] == "country");
    assert_eq!(
        country.map(|f| f[2].clone()),
        Some(serde_json::Value::Bool(true)),
        "{after}"
    );
    assert_eq!(
        after["partition_columns"],
        serde_json::json!(["event_date"])
    );

    // a changed type is refused, even when allowed, and the table stays as it is
    let retyped = BASE_FIELDS.replace(
        r#"{ name = "page_url", type = "string" }"#,
        r#"{ name = "page_url", type = "int64" }"#,
    );
    identity_pipeline(
        &rig,
        &format!("{retyped},\n    {{ name = \"country\", type = \"string\" }}"),
        true,
    );
    let stderr = ingest_refused(&rig);
    assert!(
        stderr.contains("column `page_url`") && stderr.contains("cannot change a column's type"),
        "{stderr}"
    );
    assert_eq!(
        python_tool("delta_columns.py", &[lake])["version"],
        after["version"]
    );
}
