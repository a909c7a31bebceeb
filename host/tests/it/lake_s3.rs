//! The lake on S3 served by moto: conditional commits, the end-to-end
//! ingest, and an object store that stops answering mid-run.

use std::process::Stdio;
use std::time::Duration;

use weir::lake::{CommitOutcome, CommitRecord, Lake};
use weir::pipeline::Pipeline;

use crate::support::{
    Moto, Outage, assert_exactly_once, good_events, produce, read_lake, rig, signal,
    spawn_producer, wait_for_lake, write_pipeline,
};

fn record(chain_offset: i64) -> CommitRecord {
    CommitRecord {
        version: 1,
        pipeline: "t".into(),
        topic: "t".into(),
        partition: 0,
        chain_offset,
        first_offset: chain_offset,
        last_offset: chain_offset + 9,
        next_offset: chain_offset + 10,
        files: vec![],
        plugin_digest: "0".repeat(64),
        weir_version: weir::VERSION.into(),
        committed_at: "2026-11-24T00:00:00Z".into(),
        read: 10,
        kept: 10,
        dropped: 0,
        dead_lettered: 0,
    }
}

fn assert_create_only(pipeline: &std::path::Path) {
    let p = Pipeline::load(pipeline, &[]).unwrap();
    let lake = Lake::open(&p.config.lake).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(lake.commit(&record(0))).unwrap(),
        CommitOutcome::Committed
    );
    let mut rival = record(0);
    rival.last_offset = 4;
    assert_eq!(
        rt.block_on(lake.commit(&rival)).unwrap(),
        CommitOutcome::Conflict
    );
    assert_eq!(
        rt.block_on(lake.commit(&record(10))).unwrap(),
        CommitOutcome::Committed
    );
    let last = rt.block_on(lake.last_commit("t", 0)).unwrap().unwrap();
    assert_eq!(last.next_offset, 20);
    // a stale "latest" hint only shortens the listing; it never hides a newer record
    rt.block_on(lake.set_latest_hint(&record(0))).unwrap();
    assert_eq!(
        rt.block_on(lake.last_commit("t", 0))
            .unwrap()
            .unwrap()
            .next_offset,
        20
    );
    rt.block_on(lake.set_latest_hint(&record(10))).unwrap();
    assert_eq!(
        rt.block_on(lake.last_commit("t", 0))
            .unwrap()
            .unwrap()
            .next_offset,
        20
    );
    // a hint naming a record that does not exist falls back to a full listing
    rt.block_on(lake.set_latest_hint(&record(500))).unwrap();
    assert_eq!(
        rt.block_on(lake.last_commit("t", 0))
            .unwrap()
            .unwrap()
            .next_offset,
        20
    );
    assert_eq!(
        rt.block_on(lake.commits()).unwrap(),
        vec![record(0), record(10)]
    );
}

#[test]
fn commit_records_are_create_only_on_local_disk_and_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let local = write_pipeline(
        dir.path(),
        "unused:9092",
        "local",
        dir.path().join("lake").to_str().unwrap(),
        "",
    );
    assert_create_only(&local);
    let moto = Moto::start();
    moto.bucket("commits");
    let s3 = write_pipeline(
        dir.path(),
        "unused:9092",
        "s3",
        "s3://commits/lake",
        &moto.lake_settings(),
    );
    assert_create_only(&s3);
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
        log.contains("lake write failed; retrying"),
        "no retry was logged:\n{log}"
    );
    // the outage outlasted the retry window: consumption paused, then resumed
    assert!(log.contains("consumption paused"), "{log}");
    assert!(log.contains("consumption resumed"), "{log}");
    assert_exactly_once(&read_lake(&pipeline), "t", 4000);
}
