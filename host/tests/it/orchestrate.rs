//! The orchestrator against moto server (S3 lake, DynamoDB checkpoints,
//! Lambda notices) and PostgreSQL: S3 notifications posted to
//! `/events`, retries and failure notices, two orchestrators on the same
//! events, a lease holder killed, and the checkpoint contract of both stores.

use std::process::{Child, Stdio};
use std::time::Duration;

use weir::orchestrate::{CheckpointStore, Status};

use crate::batch::{PgDb, TableLock, batch_events, pg_exec, pg_rows};
use crate::support::*;

/// An S3-lake rig with DynamoDB checkpoints and a Postgres warehouse.
fn orchestrated_rig(topic: &str, moto: &Moto, warehouse_url: &str, extra: &str) -> Rig {
    moto.bucket("lake");
    let settings = format!(
        "{}[warehouse]\nurl = \"{warehouse_url}\"\nconnect_timeout_secs = 2\n\
         [checkpoints]\nurl = \"dynamodb://weir-checkpoints-{topic}\"\naws = {{ {} }}\n\
         [orchestrator]\nlisten = \"127.0.0.1:0\"\npoll_interval_ms = 0\nquiet_ms = 300\nmax_attempts = 2\n\
         retry_initial_ms = 100\nretry_max_ms = 200\nlease_ttl_ms = 2000\n{extra}",
        moto.lake_settings(),
        moto.aws_settings().trim().replace('\n', ", ")
    );
    rig(topic, 2, Some(&format!("s3://lake/{topic}")), &settings)
}

/// The S3 notifications S3 would send for the data table's commits
/// (`_delta_log/<version>.json`; the data files' own notifications are
/// ignored by the orchestrator, so they are left out).
fn notifications(rig: &Rig, topic: &str) -> String {
    let mut records = Vec::new();
    for (i, c) in lake_commits(&rig.pipeline).iter().enumerate() {
        let key = format!("{topic}/_delta_log/{:020}.json", c.version.unwrap());
        records.push(serde_json::json!({
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-29T10:00:00.000Z", "eventName": "ObjectCreated:Put",
            "s3": { "bucket": { "name": "lake" }, "object": { "key": key, "size": 1, "sequencer": format!("{i:016}") } }
        }));
    }
    serde_json::json!({ "Records": records }).to_string()
}

fn spawn_orchestrator(rig: &Rig) -> (Child, String) {
    let mut child = weir_cmd(&["orchestrate", rig.pipeline.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = wait_for_line(&mut child, "orchestrator listening on");
    (child, addr)
}

fn audit_count(db: &PgDb, date: Option<&str>) -> usize {
    let filter = date
        .map(|d| format!(" WHERE partition_date = '{d}'"))
        .unwrap_or_default();
    let sql = format!("SELECT count(*) FROM weir_load_audit{filter}");
    let rows = pg_rows(&db.url, "SELECT to_regclass('weir_load_audit') IS NOT NULL");
    if rows[0][0].as_deref() != Some("t") {
        return 0;
    }
    pg_rows(&db.url, &sql)[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn status_json(rig: &Rig) -> Vec<serde_json::Value> {
    let out = weir_ok(&mut weir_cmd(&[
        "orchestrate",
        "status",
        rig.pipeline.to_str().unwrap(),
        "--json",
    ]));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn dates_of(rig: &Rig) -> Vec<String> {
    let mut d: Vec<String> = read_lake(&rig.pipeline)
        .kept
        .into_iter()
        .map(|(_, d, _)| d)
        .collect();
    d.sort();
    d.dedup();
    d
}

#[test]
fn s3_events_load_rows_and_checkpoint_and_repeats_run_nothing() {
    let moto = Moto::start();
    let db = PgDb::create("orch");
    let rig = orchestrated_rig("orch-ev", &moto, &db.url, "");
    produce(&rig.kafka.brokers, "orch-ev", &batch_events("e", 900, None));
    rig.drain();
    let (mut child, addr) = spawn_orchestrator(&rig);

    let (code, body) = http_post(&addr, "/events", "{\"Records\": 5}");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not an S3 event notification"), "{body}");
    let (code, _) = http_post(&addr, "/events", &serde_json::json!({"Records": [{"eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "lake"}, "object": {"key": "orch-ev/_dead_letters/_delta_log/00000000000000000001.json"}}}]}).to_string());
    assert_eq!(code, 202);

    let events = notifications(&rig, "orch-ev");
    let (code, body) = http_post(&addr, "/events", &events);
    assert_eq!(code, 202, "{body}");
    wait_until("three loads", 60, || audit_count(&db, None) == 3);
    let status = status_json(&rig);
    assert_eq!(status.len(), 3, "{status:?}");
    for c in &status {
        assert_eq!(c["status"], "succeeded", "{c}");
        assert!(c["position"].as_str().unwrap().starts_with('v'), "{c}");
        assert!(c["lease_owner"].is_null());
    }
    assert_eq!(
        pg_rows(&db.url, "SELECT count(*) FROM page_metrics_daily")[0][0].as_deref(),
        Some("15")
    );

    // the same notifications again: nothing new runs
    let (code, _) = http_post(&addr, "/events", &events);
    assert_eq!(code, 202);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(audit_count(&db, None), 3);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());

    // a new process sees the same notifications: the checkpoints say nothing is new
    let (mut child, addr) = spawn_orchestrator(&rig);
    http_post(&addr, "/events", &events);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(audit_count(&db, None), 3);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn failures_retry_then_notify_lambda_once_and_retry_recovers() {
    let moto = Moto::start();
    moto.lambda_function("weir-failures");
    let db = PgDb::create("orchfail");
    let outage = Outage::forward("127.0.0.1:5432");
    let via = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", outage.port));
    let notify = format!(
        "[orchestrator.notify]\nlambda_function = \"weir-failures\"\naws = {{ {} }}\n",
        moto.aws_settings().trim().replace('\n', ", ")
    );
    let rig = orchestrated_rig("orch-fail", &moto, &via, &notify);
    produce(
        &rig.kafka.brokers,
        "orch-fail",
        &batch_events("f", 300, Some(0)),
    );
    rig.drain();
    let date = dates_of(&rig)[0].clone();
    let event_file = rig.dir.path().join("event.json");
    std::fs::write(&event_file, notifications(&rig, "orch-fail")).unwrap();

    outage.begin();
    moto.start_recording();
    let out = weir(&[
        "orchestrate",
        rig.pipeline.to_str().unwrap(),
        "--event",
        event_file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes[0]["outcome"], "failed", "{outcomes}");
    assert_eq!(outcomes[0]["attempts"], 2);

    let invokes: Vec<serde_json::Value> = moto
        .recorded()
        .into_iter()
        .filter(|r| {
            r["url"]
                .as_str()
                .unwrap()
                .contains("/functions/weir-failures/invocations")
        })
        .collect();
    assert_eq!(invokes.len(), 1, "{invokes:?}");
    let headers = &invokes[0]["headers"];
    let kind = headers
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-invocation-type"))
        .unwrap()
        .1;
    assert_eq!(kind, "Event");
    let body = invokes[0]["body"].as_str().unwrap();
    let body = if invokes[0]["body_encoded"] == true {
        base64_decode(body)
    } else {
        body.to_string()
    };
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["pipeline"], "web-vitals");
    assert_eq!(payload["partition"], date.as_str());
    assert_eq!(payload["attempts"], 2);
    assert!(
        payload["error"]
            .as_str()
            .unwrap()
            .contains("page_metrics_daily"),
        "{payload}"
    );
    assert!(payload["time"].as_str().unwrap().starts_with("20"));

    let status = status_json(&rig);
    assert_eq!(status[0]["status"], "failed");
    assert_eq!(status[0]["attempts"], 2);
    assert!(
        status[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect")
    );
    let table = weir_ok(&mut weir_cmd(&[
        "orchestrate",
        "status",
        rig.pipeline.to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&table.stdout).contains("failed"));

    outage.end();
    let out = weir_ok(&mut weir_cmd(&[
        "orchestrate",
        "retry",
        rig.pipeline.to_str().unwrap(),
        "--json",
    ]));
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes[0]["outcome"], "loaded", "{outcomes}");
    assert_eq!(status_json(&rig)[0]["status"], "succeeded");
    assert_eq!(audit_count(&db, Some(&date)), 1);
}

#[test]
fn an_orchestrator_waits_for_dynamodb_instead_of_exiting() {
    use std::io::BufRead;
    let moto = Moto::start();
    let db = PgDb::create("orchwait");
    let rig = orchestrated_rig("orch-wait", &moto, &db.url, "");
    let outage = Outage::forward(moto.endpoint.trim_start_matches("http://"));
    outage.begin();
    let set = format!("checkpoints.aws.endpoint=http://127.0.0.1:{}", outage.port);
    let mut child = weir_cmd(&["orchestrate", rig.pipeline.to_str().unwrap(), "--set", &set])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let retrying = line.contains("checkpoint store unreachable; retrying");
        seen.push(line);
        if retrying {
            break;
        }
    }
    assert!(
        seen.last()
            .unwrap()
            .contains("dynamodb table weir-checkpoints-orch-wait"),
        "{seen:?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running, waiting for DynamoDB"
    );
    outage.end();
    let addr = lines
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| {
            l.split_once("orchestrator listening on ")
                .map(|(_, a)| a.trim().to_string())
        })
        .expect("serving once DynamoDB answers");
    std::thread::spawn(move || for _ in lines {});
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_malformed_one_shot_event_is_refused_with_the_reason() {
    let scratch = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        scratch.path(),
        "127.0.0.1:9",
        "orch-bad",
        &scratch.path().join("lake").display().to_string(),
        &format!(
            "[checkpoints]\nurl = \"{}\"\n",
            scratch.path().join("ckpt").display()
        ),
    );
    let mut child = weir_cmd(&["orchestrate", pipeline.to_str().unwrap(), "--event", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"Records": [{"eventName": 3}]}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-: not an S3 event notification"), "{err}");
    assert!(
        !scratch.path().join("ckpt").exists(),
        "nothing else was touched"
    );
}

/// Standard base64 (the recorder's encoding of request bodies).
fn base64_decode(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn two_orchestrators_on_the_same_events_load_each_partition_once() {
    let moto = Moto::start();
    let db = PgDb::create("orchtwo");
    let rig = orchestrated_rig("orch-two", &moto, &db.url, "");
    produce(
        &rig.kafka.brokers,
        "orch-two",
        &batch_events("t", 900, None),
    );
    rig.drain();
    let events = notifications(&rig, "orch-two");
    let (mut a, addr_a) = spawn_orchestrator(&rig);
    let (mut b, addr_b) = spawn_orchestrator(&rig);
    assert_eq!(http_post(&addr_a, "/events", &events).0, 202);
    assert_eq!(http_post(&addr_b, "/events", &events).0, 202);
    wait_until("three loads", 60, || audit_count(&db, None) >= 3);
    // both have had time to run (or skip) everything they were told about
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        audit_count(&db, None),
        3,
        "each partition aggregated exactly once"
    );
    assert!(status_json(&rig).iter().all(|c| c["status"] == "succeeded"));
    for child in [&mut a, &mut b] {
        signal(child, "TERM");
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn a_killed_lease_holder_is_taken_over_after_the_lease_expires() {
    let moto = Moto::start();
    let db = PgDb::create("orchkill");
    let rig = orchestrated_rig("orch-kill", &moto, &db.url, "");
    produce(
        &rig.kafka.brokers,
        "orch-kill",
        &batch_events("k", 600, Some(0)),
    );
    rig.drain();
    let date = dates_of(&rig)[0].clone();
    let events = notifications(&rig, "orch-kill");
    // the table exists; a transaction of the test's holds it so the first run stops mid-load
    weir_ok(&mut weir_cmd(&[
        "aggregate",
        rig.pipeline.to_str().unwrap(),
        "--date",
        &date,
    ]));
    assert_eq!(audit_count(&db, Some(&date)), 1);
    let lock = TableLock::hold(&db.url, "page_metrics_daily");

    let (mut a, addr_a) = spawn_orchestrator(&rig);
    // force a run: the checkpoint has no position yet
    http_post(&addr_a, "/events", &events);
    lock.wait_for_weir(&db.url);
    let held = status_json(&rig);
    assert_eq!(held[0]["status"], "running");
    assert!(held[0]["lease_owner"].is_string());
    a.kill().unwrap();
    a.wait().unwrap();
    lock.release();

    let (mut b, addr_b) = spawn_orchestrator(&rig);
    http_post(&addr_b, "/events", &events);
    wait_until("the second orchestrator to take over", 60, || {
        audit_count(&db, Some(&date)) == 2
    });
    let after = status_json(&rig);
    assert_eq!(after[0]["status"], "succeeded", "{after:?}");
    assert!(after[0]["lease_owner"].is_null());
    signal(&b, "TERM");
    assert!(b.wait().unwrap().success());
    pg_exec(&db.url, "SELECT 1");
}

/// How the contract's eight lease takers run.
#[derive(Clone, Copy, PartialEq)]
enum Race {
    /// all at once.
    Concurrent,
    /// one after the other: moto's DynamoDB checks a write's condition and
    /// applies it without a lock, so two concurrent conditional puts can
    /// both pass there (DynamoDB itself serialises them); the stale-write
    /// check below still tests the condition on moto.
    Sequential,
}

/// The checkpoint contract, run against a store.
fn checkpoint_contract(rt: &tokio::runtime::Runtime, store: CheckpointStore, race: Race) {
    let store = std::sync::Arc::new(store);
    rt.block_on(async {
        let fresh = store.get("p", "2026-11-20").await.unwrap();
        assert_eq!((fresh.version, fresh.status), (0, Status::Pending));
        // one lease at a time, even when eight workers race for it
        let mut racers = Vec::new();
        for i in 0..8 {
            let s = store.clone();
            let racer = tokio::spawn(async move {
                s.acquire("p", "2026-11-20", &format!("w{i}"), 60_000)
                    .await
                    .unwrap()
            });
            if race == Race::Sequential {
                while !racer.is_finished() {
                    tokio::task::yield_now().await;
                }
            }
            racers.push(racer);
        }
        let mut winners = Vec::new();
        for r in racers {
            if let Some(w) = r.await.unwrap() {
                winners.push(w);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one lease");
        let (held, previous) = winners.pop().unwrap();
        assert_eq!(previous, Status::Pending);
        assert_eq!(held.status, Status::Running);
        assert!(
            store
                .acquire("p", "2026-11-20", "other", 60_000)
                .await
                .unwrap()
                .is_none()
        );
        // a stale writer (old version) cannot overwrite
        let mut stale = held.clone();
        stale.version -= 1;
        stale.position = Some("stale".into());
        assert!(!store.swap(&stale).await.unwrap());
        let held = store.renew(&held, 60_000).await.unwrap().unwrap();
        assert!(
            store
                .finish(&held, |c| {
                    c.status = Status::Succeeded;
                    c.position = Some("3:abc".into());
                })
                .await
                .unwrap()
        );
        // finishing twice with the same (now old) checkpoint is refused
        assert!(
            !store
                .finish(&held, |c| c.status = Status::Failed)
                .await
                .unwrap()
        );
        let done = store.get("p", "2026-11-20").await.unwrap();
        assert_eq!(
            (
                done.status,
                done.position.as_deref(),
                done.lease_owner.as_deref()
            ),
            (Status::Succeeded, Some("3:abc"), None)
        );
        // an expired lease is taken over
        let (_, previous) = store
            .acquire("p", "2026-11-21", "short", 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(previous, Status::Pending);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (taken, _) = store
            .acquire("p", "2026-11-21", "next", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.lease_owner.as_deref(), Some("next"));
        let all = store.list("p").await.unwrap();
        assert_eq!(
            all.iter().map(|c| c.partition.as_str()).collect::<Vec<_>>(),
            ["2026-11-20", "2026-11-21"]
        );
        assert!(store.list("other-pipeline").await.unwrap().is_empty());
    });
}

#[test]
fn checkpoint_contract_local_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    checkpoint_contract(
        &rt,
        CheckpointStore::File(weir::orchestrate::file_store::FileStore::new(
            dir.path().join("ckpt"),
        )),
        Race::Concurrent,
    );
}

#[test]
fn checkpoint_contract_dynamodb_store() {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = weir::orchestrate::dynamo::AwsSettings {
        region: Some("us-east-1".into()),
        endpoint: Some(moto.endpoint.clone()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
    };
    let store = rt
        .block_on(weir::orchestrate::dynamo::DynamoStore::open(
            "weir-contract",
            &settings,
        ))
        .unwrap();
    checkpoint_contract(&rt, CheckpointStore::Dynamo(store), Race::Sequential);
}
