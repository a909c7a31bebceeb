//! The lake on S3 served by moto: two writers racing for one partition
//! (Delta commits by conditional put), the end-to-end
//! ingest, and an object store that stops answering mid-run.

use std::process::Stdio;
use std::time::Duration;

use weir::lake::{Lake, PartitionFlush, PartitionOutcome, Provenance, Resume, StagedFile};
use weir::pipeline::Pipeline;

use crate::support::{
    Moto, Outage, assert_exactly_once, good_events, produce, read_delta, read_lake, rig, signal,
    spawn_producer, wait_for_lake, write_pipeline,
};

/// One flush of partition 0 by one writer: a data file with `rows` events.
fn flush_of(
    lake: &Lake,
    rt: &tokio::runtime::Runtime,
    p: &Pipeline,
    writer: &str,
    expected: Resume,
    first: usize,
    rows: usize,
) -> PartitionFlush {
    let schema = p.schema.arrow().clone();
    let decoder_input: Vec<String> = (first..first + rows)
        .map(|i| crate::support::good_event("r", i))
        .collect();
    let mut decoder = weir::decode::JsonDecoder::new(&p.schema, rows);
    for line in &decoder_input {
        decoder.push(line.as_bytes()).unwrap();
    }
    let batch = decoder.flush();
    assert_eq!(batch.schema(), schema);
    let partition_by = &p.config.lake.partition_by;
    let meta = weir::lake::FileMetadata {
        plugin_digest: "0".repeat(64),
        topic: "t".into(),
        partition: 0,
        first_offset: first as i64,
        last_offset: (first + rows - 1) as i64,
        writer_token: weir::lake::FileMetadata::new_token(),
    };
    let bytes = weir::lake::encode_parquet(
        &[batch],
        weir::lake::ParquetOptions::new("zstd", 1024),
        &meta,
    )
    .unwrap();
    // every event of the fixture is on one of three days; the race puts
    // them all under one date (the dates are not what it tests)
    let path = meta.data_path(partition_by, "2026-11-24");
    assert!(path.contains(&meta.writer_token), "{writer}: {path}");
    rt.block_on(lake.data().location().put(&path, bytes.clone()))
        .unwrap();
    PartitionFlush {
        topic: "t".into(),
        partition: 0,
        expected,
        last_offset: (first + rows - 1) as i64,
        data_files: vec![StagedFile {
            path,
            partition_value: Some("2026-11-24".into()),
            rows: rows as u64,
            bytes: bytes.len() as u64,
        }],
        dead_files: Vec::new(),
    }
}

/// Two writers that both believe they own partition 0 of `pipeline`'s lake:
/// exactly one commit wins, the loser is fenced and told where to resume.
fn two_writers_race(pipeline: &std::path::Path) {
    let p = Pipeline::load(pipeline, &[]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // the table: the events' columns plus the partition column
    let table_schema = crate::support::events_table_schema(&p);
    let open = || {
        let mut lake = Lake::open(&p.config.lake, &p.config.name).unwrap();
        rt.block_on(lake.ensure_tables(
            &table_schema,
            &weir::lake::dead_letter_schema(),
            weir::lake::SchemaChange::Refuse,
        ))
        .unwrap();
        rt.block_on(lake.refresh()).unwrap();
        lake
    };
    let (mut a, mut b) = (open(), open());
    let none = Resume::default();
    assert_eq!(rt.block_on(a.resume("t", 0)).unwrap(), none);
    assert_eq!(rt.block_on(b.resume("t", 0)).unwrap(), none);
    // both flush offsets from 0; A commits first, B's commit must lose
    let mut fa = [flush_of(&a, &rt, &p, "a", none, 0, 10)];
    let mut fb = [flush_of(&b, &rt, &p, "b", none, 0, 5)];
    let provenance = Provenance::default();
    let ra = rt.block_on(a.commit(&mut fa, &provenance)).unwrap();
    assert_eq!(ra.outcomes, [PartitionOutcome::Committed]);
    let rb = rt.block_on(b.commit(&mut fb, &provenance)).unwrap();
    assert_eq!(
        rb.outcomes,
        [PartitionOutcome::Fenced(Resume {
            data: Some(9),
            dead: None
        })],
        "the loser resumes after the winner"
    );
    assert_eq!(rb.data_version, None);
    // both at once, from the winner's position: one wins, one is fenced
    let from = Resume {
        data: Some(9),
        dead: None,
    };
    let mut fa = [flush_of(&a, &rt, &p, "a", from, 10, 10)];
    let mut fb = [flush_of(&b, &rt, &p, "b", from, 10, 7)];
    let (ra, rb) = rt.block_on(async {
        tokio::join!(
            a.commit(&mut fa, &provenance),
            b.commit(&mut fb, &provenance)
        )
    });
    let outcomes = [ra.unwrap().outcomes[0], rb.unwrap().outcomes[0]];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == PartitionOutcome::Committed)
            .count(),
        1,
        "{outcomes:?}"
    );
    // the table holds the winners' rows once: 10 + 10 or 10 + 7, never both
    let mut reader = open();
    rt.block_on(reader.refresh()).unwrap();
    let resume = rt.block_on(reader.resume("t", 0)).unwrap();
    let files = rt
        .block_on(reader.data().files(&p.config.lake.partition_by, None))
        .unwrap();
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    assert_eq!(files.len(), 2, "{files:?}");
    match resume.data {
        Some(19) => assert_eq!(rows, 20),
        Some(16) => assert_eq!(rows, 17),
        other => panic!("unexpected txn version {other:?}"),
    }
}

#[test]
fn two_writers_of_one_partition_one_wins_on_local_disk_and_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let local = write_pipeline(
        dir.path(),
        "unused:9092",
        "local",
        dir.path().join("lake").to_str().unwrap(),
        "",
    );
    two_writers_race(&local);
    let found = read_delta(dir.path().join("lake").to_str().unwrap(), "r", 0, &[]);
    assert_eq!(found["duplicated"], 0, "{found}");
    assert_eq!(found["orphans_listed"], 0, "{found}");
    assert!(found["orphans"].as_u64().unwrap() >= 1, "{found}");
    let moto = Moto::start();
    moto.bucket("race");
    let s3 = write_pipeline(
        dir.path(),
        "unused:9092",
        "s3",
        "s3://race/lake",
        &moto.lake_settings(),
    );
    two_writers_race(&s3);
    let found = read_delta(
        "s3://race/lake",
        "r",
        0,
        &[
            ("AWS_ENDPOINT_URL", &moto.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert_eq!(found["duplicated"], 0, "{found}");
    assert!(found["rows"].as_u64().unwrap() >= 17, "{found}");
}

#[test]
fn ingest_to_s3_lands_every_event_once() {
    let moto = Moto::start();
    moto.bucket("weir");
    let rig = rig("s3vitals", 3, Some("s3://weir/lake"), &moto.lake_settings());
    let (k, pipeline) = (&rig.kafka, rig.pipeline.clone());
    let mut events = good_events("s", 600);
    events.push("{broken".into());
    produce(&k.brokers, "s3vitals", &events);
    let summary = rig.drain();
    assert_eq!(
        (summary["kept"].as_u64(), summary["dead_lettered"].as_u64()),
        (Some(600), Some(1))
    );
    let contents = read_lake(&pipeline);
    assert_exactly_once(&contents, "s", 600);
    assert_eq!(
        contents.dead,
        vec![(
            "{broken".to_string(),
            "decode".to_string(),
            "invalid JSON".to_string()
        )]
    );
}

#[test]
fn an_object_store_outage_pauses_ingest_without_loss() {
    let moto = Moto::start();
    moto.bucket("weir");
    // weir reaches moto through a forwarder that can be taken down
    let outage = Outage::forward(moto.endpoint.trim_start_matches("http://"));
    let through = moto
        .lake_settings()
        .replace(&moto.endpoint, &format!("http://127.0.0.1:{}", outage.port));
    let settings = format!(
        "{through}request_timeout_secs = 2\nclient_retries = 1\n[ingest]\nflush_rows = 300\nflush_age_ms = 150\nretry_max_ms = 2000\nretry_window_ms = 2000\n"
    );
    let rig = rig("stall", 3, Some("s3://weir/lake"), &settings);
    let (k, pipeline, dir) = (&rig.kafka, rig.pipeline.clone(), &rig.dir);
    let log = std::fs::File::create(dir.path().join("ingest.log")).unwrap();
    let mut child = rig.spawn_ingest(Stdio::from(log));
    let producer = spawn_producer(
        &k.brokers,
        "stall",
        "t",
        200,
        Duration::from_millis(300),
        Some(4000),
        Default::default(),
    );
    assert!(
        wait_for_lake(&pipeline, 1, Duration::from_secs(40)),
        "ingest never committed"
    );
    outage.begin();
    std::thread::sleep(Duration::from_secs(8));
    outage.end();
    assert_eq!(producer.join().unwrap(), 4000);
    let complete = wait_for_lake(&pipeline, 4000, Duration::from_secs(90));
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.path().join("ingest.log")).unwrap();
    assert!(complete, "ingest did not catch up after the outage:\n{log}");
    assert!(
        log.contains("lake operation failed; retrying"),
        "no retry was logged:\n{log}"
    );
    // the outage outlasted the retry window: consumption paused, then resumed
    assert!(log.contains("consumption paused"), "{log}");
    assert!(log.contains("consumption resumed"), "{log}");
    assert_exactly_once(&read_lake(&pipeline), "t", 4000);
}
