//! `weir run` as a service: plugin hot swap under load, `/metrics` and
//! `/healthz`, SIGTERM and restart, the quickstart demo, the production
//! pipeline file.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// Pipeline settings for a service test: no orchestrator state shared with other tests.
fn service_settings(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[warehouse]\nurl = \"sqlite://{}\"\n[checkpoints]\nurl = \"{}\"\n[orchestrator]\npoll_interval_ms = 1000\nquiet_ms = 200\n{extra}",
        dir.join("wh.db").display(),
        dir.join("ckpt").display()
    )
}

fn spawn_service(rig: &Rig, json: bool) -> (Child, String) {
    let mut args = vec![
        "run",
        rig.pipeline.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    if json {
        args.push("--json");
    }
    let mut child = weir_cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = wait_for_line(&mut child, "weir listening on");
    (child, addr)
}

fn file_digest(pipeline: &std::path::Path, path: &str) -> String {
    let p = weir::pipeline::Pipeline::load(pipeline, &[]).unwrap();
    let file = std::path::Path::new(&p.config.lake.url).join(path);
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap();
    use parquet::file::reader::FileReader;
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .clone();
    kv.into_iter()
        .find(|k| k.key == "weir.plugin_digest")
        .unwrap()
        .value
        .unwrap()
}

/// Replace `to` with `from`'s bytes atomically (write beside, rename).
fn replace_file(from_bytes: &[u8], to: &std::path::Path) {
    let tmp = to.with_extension("incoming");
    std::fs::write(&tmp, from_bytes).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn hot_swap_under_load_switches_at_a_batch_boundary_and_refuses_broken_versions() {
    let scratch = tempfile::tempdir().unwrap();
    let plugin = scratch.path().join("plugin.wasm");
    std::fs::copy(wasm("weir_plugin_web_vitals"), &plugin).unwrap();
    let extra = format!(
        "[plugin]\npath = \"{}\"\nwatch_interval_ms = 200\n[ingest]\nflush_age_ms = 300\nbatch_rows = 256\n",
        plugin.display()
    );
    let rig = rig("swap", 2, None, &service_settings(scratch.path(), &extra));
    let (mut child, addr) = spawn_service(&rig, false);
    let old = sha256(&plugin);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(
        &rig.kafka.brokers,
        "swap",
        "hs",
        100,
        Duration::from_millis(40),
        None,
        stop.clone(),
    );
    wait_until("commits by the first version", 60, || {
        lake_commits(&rig.pipeline).len() >= 4
    });

    // a new version (the same rules in Python: same schema, another digest)
    replace_file(
        &std::fs::read(wasm("weir_plugin_web_vitals_py")).unwrap(),
        &plugin,
    );
    let new = sha256(&plugin);
    wait_until("the swap", 120, || {
        metric(&http_get(&addr, "/metrics").1, "weir_plugin_swaps_total") == 1
    });
    assert!(
        http_get(&addr, "/metrics")
            .1
            .contains(&format!("weir_plugin_info{{digest=\"{new}\"}} 1"))
    );
    wait_until("commits by the new version", 60, || {
        lake_commits(&rig.pipeline)
            .iter()
            .filter(|c| c.info["weir.plugin_digest"] == new.as_str())
            .count()
            >= 2
    });

    // a broken version (not a component) is refused; the new one keeps serving
    replace_file(b"\0asm not really", &plugin);
    wait_until("the refusal", 60, || {
        metric(
            &http_get(&addr, "/metrics").1,
            "weir_plugin_swaps_refused_total",
        ) >= 1
    });
    let (code, body) = http_post(&addr, "/plugins/reload", "");
    assert_eq!(code, 422, "{body}");
    let refusal: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["status"], "refused");
    assert_eq!(refusal["running"], new.as_str());
    // a version that loads but declares another output schema is refused too
    replace_file(
        &std::fs::read(wasm("weir_fixture_hostile")).unwrap(),
        &plugin,
    );
    let (code, body) = http_post(&addr, "/plugins/reload", "");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("output schema changed"), "{body}");
    let before = lake_commits(&rig.pipeline).len();
    wait_until("commits after the refusal", 60, || {
        lake_commits(&rig.pipeline).len() >= before + 2
    });
    // the batch path inside the service switched too: its loads record the new digest
    let conn = rusqlite::Connection::open(scratch.path().join("wh.db")).unwrap();
    wait_until("an aggregation run by the new version", 120, || {
        conn.query_row(
            "SELECT count(*) FROM weir_load_audit WHERE plugin_digest = ?1",
            [&new],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0)
            >= 1
    });

    stop.store(true, Ordering::Relaxed);
    let sent = producer.join().unwrap();
    assert!(
        wait_for_lake(&rig.pipeline, sent as u64, Duration::from_secs(120)),
        "not every event landed"
    );
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());

    assert_exactly_once(&read_lake(&rig.pipeline), "hs", sent);
    // commits in table order: the old version's, then the new one's; no
    // commit mixes two digests (a commit carries one in its commitInfo)
    let digests: Vec<String> = lake_commits(&rig.pipeline)
        .iter()
        .map(|c| c.info["weir.plugin_digest"].as_str().unwrap().to_string())
        .collect();
    let first_new = digests
        .iter()
        .position(|d| *d == new)
        .unwrap_or(digests.len());
    assert!(
        digests[..first_new].iter().all(|d| *d == old)
            && digests[first_new..].iter().all(|d| *d == new),
        "{digests:?}"
    );
    // every file names the digest that produced it, in its name and metadata
    let p = weir::pipeline::Pipeline::load(&rig.pipeline, &[]).unwrap();
    for (file, _) in table_batches(&p, weir::lake::TableKind::Data).1 {
        let digest = file_digest(&rig.pipeline, &file.path);
        assert!(digest == old || digest == new, "{}", file.path);
        assert!(
            file.path.contains(&digest[..8]),
            "{} mixes versions",
            file.path
        );
    }
}

#[test]
fn metrics_follow_the_run_and_healthz_turns_503_while_the_lake_is_down() {
    let moto = Moto::start();
    moto.bucket("weir");
    // the plugin comes from the object store too
    moto.put(
        "weir",
        "plugins/web-vitals.wasm",
        &wasm("weir_plugin_web_vitals"),
    );
    let outage = Outage::forward(moto.endpoint.trim_start_matches("http://"));
    let scratch = tempfile::tempdir().unwrap();
    let s3 = moto
        .lake_settings()
        .replace(&moto.endpoint, &format!("http://127.0.0.1:{}", outage.port));
    let extra = format!(
        "{s3}request_timeout_secs = 2\nclient_retries = 0\n[plugin]\npath = \"s3://weir/plugins/web-vitals.wasm\"\n[ingest]\nflush_age_ms = 300\nretry_window_ms = 1000\nretry_initial_ms = 100\nretry_max_ms = 500\n"
    );
    let rig = rig(
        "svc-metrics",
        2,
        Some("s3://weir/lake"),
        &service_settings(scratch.path(), &extra),
    );
    let (mut child, addr) = spawn_service(&rig, true);
    wait_until("healthz 200 once consuming", 60, || {
        http_get(&addr, "/healthz").0 == 200
    });
    let read = |addr: &str| metric(&http_get(addr, "/metrics").1, "weir_events_read_total");
    assert_eq!(read(&addr), 0);
    // the counters move: first 1000 messages, then 501 more
    let lines = good_events("m", 1500);
    produce(&rig.kafka.brokers, "svc-metrics", &lines[..1000]);
    wait_until("the first 1000 counted", 60, || read(&addr) == 1000);
    let mut rest = lines[1000..].to_vec();
    rest.push("not json".into());
    produce(&rig.kafka.brokers, "svc-metrics", &rest);
    wait_until("every message counted", 60, || read(&addr) == 1501);
    let text = http_get(&addr, "/metrics").1;
    assert_eq!(metric(&text, "weir_events_dead_lettered_total"), 1);
    assert!(metric(&text, "weir_commits_total") >= 1);
    assert!(metric(&text, "weir_flush_seconds_count") >= 1);
    wait_until("consumer lag from the client's statistics", 20, || {
        http_get(&addr, "/metrics")
            .1
            .contains("weir_consumer_lag{topic=\"svc-metrics\"")
    });
    assert!(text.contains("weir_plugin_batch_seconds_bucket"));
    assert!(text.contains(&format!(
        "weir_plugin_info{{digest=\"{}\"}}",
        sha256(&wasm("weir_plugin_web_vitals"))
    )));

    outage.begin();
    produce(&rig.kafka.brokers, "svc-metrics", &good_events("m2-", 200));
    wait_until("healthz 503", 60, || http_get(&addr, "/healthz").0 == 503);
    let (_, body) = http_get(&addr, "/healthz");
    assert!(body.contains("lake unreachable"), "{body}");
    assert_eq!(
        metric(&http_get(&addr, "/metrics").1, "weir_ingest_paused"),
        1
    );
    outage.end();
    wait_until("healthz 200 again", 60, || {
        http_get(&addr, "/healthz").0 == 200
    });
    wait_until("the rest counted", 60, || {
        metric(&http_get(&addr, "/metrics").1, "weir_events_read_total") == 1701
    });
    let last = http_get(&addr, "/metrics").1;

    signal(&child, "TERM");
    let out = std::mem::take(&mut child.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    let summary: serde_json::Value = serde_json::from_reader(out).unwrap();
    for (key, name) in [
        ("read", "weir_events_read_total"),
        ("kept", "weir_events_kept_total"),
        ("dropped", "weir_events_dropped_total"),
        ("dead_lettered", "weir_events_dead_lettered_total"),
        ("commits", "weir_commits_total"),
    ] {
        assert_eq!(summary[key].as_u64().unwrap(), metric(&last, name), "{key}");
    }
}

#[test]
fn sigterm_mid_run_loses_nothing_and_a_restart_duplicates_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let rig = rig(
        "svc-term",
        2,
        None,
        &service_settings(scratch.path(), "[ingest]\nflush_age_ms = 300\n"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(
        &rig.kafka.brokers,
        "svc-term",
        "st",
        150,
        Duration::from_millis(30),
        Some(6000),
        stop.clone(),
    );
    let (child, _) = spawn_service(&rig, false);
    wait_until("commits", 60, || lake_commits(&rig.pipeline).len() >= 2);
    signal(&child, "TERM");
    let mut child = child;
    assert!(child.wait().unwrap().success());
    let (mut again, addr) = spawn_service(&rig, false);
    let sent = producer.join().unwrap();
    assert!(wait_for_lake(
        &rig.pipeline,
        sent as u64,
        Duration::from_secs(120)
    ));
    // the orchestrator inside the service polls the commit log and aggregates
    let (code, body) = http_post(&addr, "/events", "{\"Records\": \"x\"}");
    assert_eq!(code, 400, "{body}");
    wait_until("orchestrator runs", 60, || {
        metric(
            &http_get(&addr, "/metrics").1,
            "weir_orchestrator_runs_total",
        ) >= 1
    });
    let conn = rusqlite::Connection::open(scratch.path().join("wh.db")).unwrap();
    wait_until("aggregated rows in SQLite", 60, || {
        conn.query_row("SELECT count(*) FROM weir_load_audit", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_or(0)
            >= 1
    });
    signal(&again, "TERM");
    assert!(again.wait().unwrap().success());
    assert_exactly_once(&read_lake(&rig.pipeline), "st", sent);
}

#[test]
fn the_quickstart_demo_summary_matches_sqlite() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let out = weir_ok(&mut weir_cmd(&[
        "demo",
        repo().join("pipelines/local.toml").to_str().unwrap(),
        "--events",
        "200000",
        "--dir",
        dir.to_str().unwrap(),
        "--json",
    ]));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // the quickstart's own volume: every event sent is read
    assert_eq!(s["sent"], 200000);
    assert_eq!(s["ingest"]["read"], 200000, "{s}");
    let i = &s["ingest"];
    assert_eq!(
        i["kept"].as_u64().unwrap()
            + i["dropped"].as_u64().unwrap()
            + i["dead_lettered"].as_u64().unwrap(),
        200000
    );
    assert!(i["dead_lettered"].as_u64().unwrap() > 0 && i["dropped"].as_u64().unwrap() > 0);
    let conn = rusqlite::Connection::open(dir.join("warehouse.db")).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM page_metrics_daily", [], |r| r.get(0))
        .unwrap();
    assert_eq!(s["warehouse_rows"].as_i64().unwrap(), rows);
    let events: i64 = conn
        .query_row("SELECT sum(events) FROM page_metrics_daily", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(events > 0 && events as u64 <= i["kept"].as_u64().unwrap());
    let mut stmt = conn
        .prepare(
            "SELECT event_date, page_url, p75_tti_ms FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_date ORDER BY p75_tti_ms DESC) AS r \
             FROM page_metrics_daily WHERE events >= 20) WHERE r <= 5 ORDER BY event_date, r",
        )
        .unwrap();
    let want: Vec<(String, String, f64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let columns: Vec<&str> = s["top"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let col = |n: &str| columns.iter().position(|c| *c == n).unwrap();
    let got: Vec<(String, String, f64)> = s["top"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[col("event_date")].as_str().unwrap().to_string(),
                r[col("page_url")].as_str().unwrap().to_string(),
                r[col("p75_tti_ms")].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.0, &g.1), (&w.0, &w.1));
        assert!(
            (g.2 - w.2).abs() < 1e-9 * w.2.abs().max(1.0),
            "{g:?} vs {w:?}"
        );
    }
    assert_eq!(got.len(), 15, "five pages for each of three days");
    assert_eq!(s["runs"].as_array().unwrap().len(), 3);
}

#[test]
fn the_production_pipeline_file_validates() {
    let out = weir_ok(&mut weir_cmd(&[
        "validate",
        repo().join("pipelines/aws.toml").to_str().unwrap(),
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}
