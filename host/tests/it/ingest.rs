//! The streaming path end to end against the embedded broker (tansu, a real
//! Kafka-protocol broker): exact contents of the lake, volume from an
//! independent producer, crash safety under SIGKILL, a consumer-group
//! rebalance with a dead member.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use weir::tools::generate::Rng;

use crate::support::{
    assert_exactly_once, good_event_date, good_events, produce, python_tool, read_delta, read_lake,
    rig, signal, spawn_mixed_producer, spawn_producer, wait_for_lake, weir_cmd, weir_ok,
};

/// Every kind of bad input, with the reason and stage it must be dead-lettered with.
fn bad_events() -> Vec<(String, &'static str, &'static str)> {
    let ts = 1_795_478_400_000i64;
    let mut v = Vec::new();
    for i in 0..3 {
        v.push((
            format!(r#"{{"event_id":"bad-json-{i}","timestamp":{ts}"#),
            "decode",
            "invalid JSON",
        ));
        v.push((
            format!(r#"["not-an-object-{i}"]"#),
            "decode",
            "not a JSON object",
        ));
        v.push((
            format!(r#"{{"event_id":"no-url-{i}","timestamp":{ts},"tti_ms":5}}"#),
            "decode",
            "missing required field `page_url`",
        ));
        v.push((format!(r#"{{"event_id":"type-{i}","timestamp":{ts},"page_url":"https://x.org","tti_ms":"fast"}}"#), "decode", "field `tti_ms`: not a float64"));
        v.push((format!(r#"{{"event_id":"naive-{i}","timestamp":"2026-11-24T08:00:00","page_url":"https://x.org","tti_ms":5}}"#), "decode", "field `timestamp`: timestamp without UTC offset"));
        v.push((format!(r#"{{"event_id":"url-{i}","timestamp":{ts},"page_url":"ftp://x.org/{i}","tti_ms":5}}"#), "plugin", "invalid page_url"));
    }
    v
}

fn bots(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!(r#"{{"event_id":"bot-{i}","timestamp":1795478400000,"page_url":"https://x.org","tti_ms":5,"user_agent":"Googlebot/2.1"}}"#))
        .collect()
}

#[test]
fn drain_writes_exactly_the_kept_events_and_dead_letters() {
    let rig = rig("vitals", 3, None, "");
    let (k, pipeline) = (&rig.kafka, rig.pipeline.clone());
    let good = good_events("g", 900);
    let bad = bad_events();
    let mut all = good.clone();
    all.extend(bots(30));
    all.extend(bad.iter().map(|(p, _, _)| p.clone()));
    produce(&k.brokers, "vitals", &all);

    let summary = rig.drain();
    assert_eq!(summary["read"], all.len() as u64);
    assert_eq!(summary["kept"], 900);
    assert_eq!(summary["dropped"], 30);
    assert_eq!(summary["dead_lettered"], bad.len() as u64);
    assert!(
        summary["files"].as_u64().unwrap() >= 3 && summary["bytes"].as_u64().unwrap() > 0,
        "{summary}"
    );

    let contents = read_lake(&pipeline);
    assert_exactly_once(&contents, "g", 900);
    for (id, dir, url) in &contents.kept {
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(
            dir,
            &good_event_date(i),
            "{id} is in the wrong date partition"
        );
        assert_eq!(
            url,
            &format!("https://shop.example.com/p/{}", i % 50),
            "{id} was not cleaned by the plugin"
        );
    }
    let mut expected: Vec<(String, String, String)> = bad
        .iter()
        .map(|(p, s, r)| (p.clone(), s.to_string(), r.to_string()))
        .collect();
    let mut dead = contents.dead.clone();
    expected.sort();
    dead.sort();
    assert_eq!(dead, expected);

    // delta-rs's own Python reader sees exactly the same rows
    let lake = rig.dir.path().join("lake");
    let found = read_delta(lake.to_str().unwrap(), "g", 900, &[]);
    assert_eq!(found["rows"], 900, "{found}");
    assert_eq!(found["distinct"], 900, "{found}");
    assert_eq!(found["missing"], 0, "{found}");
    assert_eq!(found["unexpected"], 0, "{found}");
    assert_eq!(found["dead"], bad.len(), "{found}");
    assert_eq!(found["dead_distinct"], bad.len(), "{found}");

    // a second drain finds nothing new: the tables' txn versions are the position
    assert_eq!(rig.drain()["read"], 0);

    // provenance: the plugin digest and weir's version in every commit's commitInfo
    let history = crate::support::lake_commits(&pipeline);
    assert!(!history.is_empty());
    for h in &history {
        let digest = h.info["weir.plugin_digest"].as_str().unwrap();
        assert_eq!(digest.len(), 64, "{h:?}");
        assert_eq!(h.info["weir.version"], weir::VERSION, "{h:?}");
    }

    // the CLI lists the active files of one date, from the Delta log
    let listed = weir_cmd(&[
        "lake",
        "files",
        pipeline.to_str().unwrap(),
        "--date",
        &good_event_date(0),
        "--json",
    ])
    .output()
    .unwrap();
    let rows: u64 = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["rows"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(
        rows,
        contents
            .kept
            .iter()
            .filter(|(_, d, _)| d == &good_event_date(0))
            .count() as u64
    );
}

#[test]
fn vacuum_removes_only_files_no_version_references() {
    let rig = rig("vac", 1, None, "");
    let (k, pipeline, lake) = (
        &rig.kafka,
        rig.pipeline.clone(),
        rig.dir.path().join("lake"),
    );
    produce(&k.brokers, "vac", &good_events("v", 50));
    rig.drain();
    std::fs::create_dir_all(lake.join("event_date=2026-11-24")).unwrap();
    let orphan = lake.join("event_date=2026-11-24/vac-p0-o00000000000000000050-00000000000000000099-deadbeef-0123456789ab.parquet");
    std::fs::write(&orphan, b"left by a crashed writer").unwrap();
    // the independent reader never takes a file no version adds
    let found = read_delta(lake.to_str().unwrap(), "v", 50, &[]);
    assert_eq!(found["orphans"], 1, "{found}");
    assert_eq!(found["orphans_listed"], 0, "{found}");
    assert_eq!(found["rows"], 50, "{found}");
    weir_ok(&mut weir_cmd(&[
        "lake",
        "vacuum",
        pipeline.to_str().unwrap(),
        "--retention-hours",
        "0",
    ]));
    assert!(!orphan.exists());
    assert_exactly_once(&read_lake(&pipeline), "v", 50);
    let history = weir_ok(&mut weir_cmd(&[
        "lake",
        "history",
        pipeline.to_str().unwrap(),
    ]));
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(text.contains("VACUUM END"), "{text}");
    assert!(text.contains("STREAMING UPDATE"), "{text}");
}

const FAST_ROLL: &str = "[ingest]\nflush_rows = 300\nflush_age_ms = 150\nbatch_rows = 256\n";

#[test]
fn a_file_through_two_workers_lands_exactly_once_without_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline = crate::support::write_pipeline(
        dir.path(),
        "unused:9092",
        "unused",
        lake.to_str().unwrap(),
        "[ingest]\nworkers = 2\nflush_rows = 1500\nbatch_rows = 256",
    );
    let good = good_events("f", 6000);
    let bad = bad_events();
    let mut lines = good.clone();
    lines.extend(bots(40));
    lines.extend(bad.iter().map(|(p, _, _)| p.clone()));
    let source = dir.path().join("events.jsonl");
    std::fs::write(&source, lines.join("\n") + "\n").unwrap();

    let p = weir::pipeline::Pipeline::load(&pipeline, &[]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // four partitions over two workers, rolled every 1500 messages
    let summary = weir::ingest::ingest_file(p.clone(), rt.handle(), &source, 4).unwrap();
    assert_eq!(summary.workers, 2);
    assert_eq!(summary.read, lines.len() as u64, "{summary:?}");
    assert_eq!(summary.kept, 6000, "{summary:?}");
    assert_eq!(summary.dropped, 40, "{summary:?}");
    assert_eq!(summary.dead_lettered, bad.len() as u64, "{summary:?}");
    assert!(summary.commits >= 2, "{summary:?}");

    let found = read_delta(lake.to_str().unwrap(), "f", 6000, &[]);
    assert_eq!(found["rows"], 6000, "{found}");
    assert_eq!(found["distinct"], 6000, "{found}");
    assert_eq!(found["missing"], 0, "{found}");
    assert_eq!(found["unexpected"], 0, "{found}");
    assert_eq!(found["dead"], bad.len(), "{found}");
    assert_eq!(found["dead_distinct"], bad.len(), "{found}");
    assert_eq!(found["orphans"], 0, "{found}");
    let contents = read_lake(&pipeline);
    assert_exactly_once(&contents, "f", 6000);
    for (id, dir, _) in &contents.kept {
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(
            dir,
            &good_event_date(i),
            "{id} is in the wrong date partition"
        );
    }

    // the same file again: every partition resumes past its lines
    let again = weir::ingest::ingest_file(p, rt.handle(), &source, 4).unwrap();
    assert_eq!(again.read, 0, "{again:?}");
    assert_eq!(
        read_delta(lake.to_str().unwrap(), "f", 6000, &[])["rows"],
        6000
    );
}

/// Messages in the volume test: more than 600 MB of JSON, far past what
/// librdkafka's mock cluster keeps (5 MiB or 100 000 messages a partition).
const VOLUME_EVENTS: usize = 2_000_000;

#[test]
fn two_million_events_from_an_independent_producer_all_land_exactly_once() {
    let rig = rig("volume", 3, None, "");
    let produced = python_tool(
        "produce.py",
        &[
            &rig.kafka.brokers,
            "volume",
            &VOLUME_EVENTS.to_string(),
            "v",
        ],
    );
    assert_eq!(produced["sent"], VOLUME_EVENTS);
    assert!(
        produced["bytes"].as_u64().unwrap() > 600_000_000,
        "{produced}"
    );
    let summary = rig.drain();
    assert_eq!(summary["read"], VOLUME_EVENTS, "{summary}");
    assert_eq!(summary["kept"], VOLUME_EVENTS, "{summary}");
    let lake = rig.dir.path().join("lake");
    let found = read_delta(lake.to_str().unwrap(), "v", VOLUME_EVENTS, &[]);
    assert_eq!(found["rows"], VOLUME_EVENTS, "{found}");
    assert_eq!(found["distinct"], VOLUME_EVENTS, "{found}");
    assert_eq!(found["missing"], 0, "{found}");
    assert_eq!(found["duplicated"], 0, "{found}");
    assert_eq!(found["unexpected"], 0, "{found}");
    assert_eq!(found["orphans"], 0, "{found}");
}

/// SIGKILLs of the crash test.
const KILLS: usize = 20;

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    // two workers whatever the machine: partitions are staged by both at once
    let extra = FAST_ROLL.replace("[ingest]", "[ingest]\nworkers = 2");
    let rig = rig("crash", 3, None, &extra);
    let (k, pipeline) = (&rig.kafka, rig.pipeline.clone());
    // events (one in ten followed by a message that is not JSON) keep
    // arriving for the whole test, until `stop`
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = spawn_mixed_producer(
        &k.brokers,
        "crash",
        "c",
        100,
        Duration::from_millis(100),
        None,
        Some(10),
        stop.clone(),
    );
    let mut rng = Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let version = || crate::support::lake_version(&pipeline);
    let mut commits_seen = vec![-1];
    for _ in 0..KILLS {
        let mut child = rig.spawn_ingest(Stdio::null());
        // once this run is committing (group joined), kill it at a random moment
        let before = *commits_seen.last().unwrap();
        let started = std::time::Instant::now();
        while version() == before && started.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(rng.below(1000)));
        signal(&child, "KILL");
        child.wait().unwrap();
        commits_seen.push(version());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = producer.join().unwrap();
    assert!(
        commits_seen.windows(2).all(|w| w[1] > w[0]),
        "a killed run committed nothing: {commits_seen:?}"
    );
    let found = catch_up_and_check(&rig, "c", sent, &[]);
    eprintln!(
        "{KILLS} kills: {} files on disk in no table version (never read)",
        found["orphans"]
    );
}

/// A last member catches up (not `--drain`: tansu 0.6 reports high
/// watermarks low after many small produce batches, and a drain stops a
/// few seconds past them); then every one of `sent` events (prefix
/// `prefix`, one in ten followed by a message that is not JSON) must be in
/// the lake once, read by weir and by the independent reader, and no file
/// outside a table version may be listed. `logs`: members' stderr files,
/// shown when a check fails.
fn catch_up_and_check(
    rig: &crate::support::Rig,
    prefix: &str,
    sent: usize,
    logs: &[std::path::PathBuf],
) -> Value {
    let pipeline = &rig.pipeline;
    let mut c = rig.spawn_ingest(Stdio::null());
    let started = std::time::Instant::now();
    while read_lake(pipeline).kept.len() < sent && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(500));
    }
    signal(&c, "TERM");
    assert!(c.wait().unwrap().success());
    let warnings = || {
        logs.iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let lake = rig.dir.path().join("lake");
    let found = read_delta(lake.to_str().unwrap(), prefix, sent, &[]);
    let bad = sent.div_ceil(10);
    for (key, want) in [
        ("rows", sent),
        ("distinct", sent),
        ("missing", 0),
        ("dead", bad),
        ("dead_distinct", bad),
        ("orphans_listed", 0),
    ] {
        assert_eq!(
            found[key],
            want,
            "{key}: {found}\nmembers' warnings:\n{}",
            warnings()
        );
    }
    assert_exactly_once(&read_lake(pipeline), prefix, sent);
    found
}

/// Two live members share the partitions, one leaves and comes back, the
/// other leaves, while events keep arriving: every rebalance flushes and
/// commits what the revoked partitions hold, and the members resume from
/// the table's `txn` versions.
#[test]
fn members_joining_and_leaving_under_load_lose_and_duplicate_nothing() {
    let rig = rig("share", 3, None, FAST_ROLL);
    let (k, pipeline) = (&rig.kafka, rig.pipeline.clone());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = spawn_mixed_producer(
        &k.brokers,
        "share",
        "s",
        100,
        Duration::from_millis(50),
        None,
        Some(10),
        stop.clone(),
    );
    let log = |name: &str| rig.dir.path().join(name);
    let member = |name: &str| rig.spawn_ingest(std::fs::File::create(log(name)).unwrap().into());
    let version = || crate::support::lake_version(&pipeline);
    let mut a = member("a.log");
    let started = std::time::Instant::now();
    while version() < 1 && started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut b = member("b.log");
    std::thread::sleep(Duration::from_secs(4));
    signal(&a, "TERM");
    assert!(a.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(2));
    let mut a2 = member("a2.log");
    std::thread::sleep(Duration::from_secs(4));
    signal(&b, "TERM");
    assert!(b.wait().unwrap().success());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = producer.join().unwrap();
    signal(&a2, "TERM");
    assert!(a2.wait().unwrap().success());
    let logs = ["a.log", "b.log", "a2.log"].map(log);
    let found = catch_up_and_check(&rig, "s", sent, &logs);
    let said = |what: &str| {
        logs.iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .matches(what)
                    .count()
            })
            .sum::<usize>()
    };
    eprintln!(
        "{sent} events through three membership changes: {found}; fenced flushes {}, gaps re-read {}",
        said("committed this partition first"),
        said("offsets skipped")
    );
}

#[test]
fn a_group_member_dying_mid_run_hands_over_without_loss_or_duplicates() {
    let rig = rig("group", 3, None, FAST_ROLL);
    let (k, pipeline) = (&rig.kafka, rig.pipeline.clone());
    let events = 9_000;
    let mut a = rig.spawn_ingest(Stdio::null());
    let mut b = rig.spawn_ingest(Stdio::null());
    let producer = spawn_producer(
        &k.brokers,
        "group",
        "r",
        300,
        Duration::from_millis(150),
        Some(events),
        Arc::default(),
    );
    std::thread::sleep(Duration::from_secs(6));
    signal(&a, "KILL");
    a.wait().unwrap();
    assert_eq!(producer.join().unwrap(), events);
    let complete = wait_for_lake(&pipeline, events as u64, Duration::from_secs(90));
    signal(&b, "TERM");
    assert!(b.wait().unwrap().success());
    assert!(complete, "the surviving member did not catch up");
    let contents = read_lake(&pipeline);
    assert_exactly_once(&contents, "r", events);
    let partitions: HashSet<String> = contents.kept.iter().map(|(_, d, _)| d.clone()).collect();
    assert_eq!(partitions.len(), 3);
}

#[test]
fn the_local_pipeline_runs_on_embedded_kafka() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let local = crate::support::repo().join("pipelines/local.toml");
    let lake = format!("lake.url={}", dir.path().join("lake").display());
    let sets = [lake.as_str(), "ingest.flush_age_ms=200"];
    let mut child = weir_cmd(&[
        "ingest",
        local.to_str().unwrap(),
        "--set",
        sets[0],
        "--set",
        sets[1],
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // the embedded broker's address is printed on stderr; keep draining it
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(address) = line.strip_prefix("embedded Kafka listening on ") {
                let _ = tx.send(address.trim().to_string());
            }
        }
    });
    let brokers = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("embedded broker address");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, good_events("l", 300).join("\n")).unwrap();
    let broker_set = format!("source.brokers={brokers}");
    weir_ok(&mut weir_cmd(&[
        "produce",
        local.to_str().unwrap(),
        "--set",
        &broker_set,
        events.to_str().unwrap(),
    ]));
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let pipeline = weir::pipeline::Pipeline::load(&local, &sets).unwrap();
    let started = std::time::Instant::now();
    while crate::support::read_lake_of(&pipeline).kept.len() < 300
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    assert_exactly_once(&crate::support::read_lake_of(&pipeline), "l", 300);
}

#[test]
fn weir_broker_serves_other_processes_and_dies_with_weir_even_on_sigkill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let local = crate::support::repo().join("pipelines/local.toml");
    let mut broker = weir_cmd(&["broker", local.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut address = String::new();
    std::io::BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let address = address.trim().to_string();
    assert!(address.starts_with("127.0.0.1:"), "{address:?}");
    // a producer and a draining ingest, each its own process
    produce(&address, "web-vitals", &good_events("b", 2000));
    let sets = [
        format!("source.brokers={address}"),
        format!("lake.url={}", dir.path().join("lake").display()),
    ];
    let out = weir_ok(&mut weir_cmd(&[
        "ingest",
        local.to_str().unwrap(),
        "--set",
        &sets[0],
        "--set",
        &sets[1],
        "--drain",
        "--json",
    ]));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["read"], 2000, "{summary}");
    let pipeline = weir::pipeline::Pipeline::load(&local, &sets).unwrap();
    assert_exactly_once(&crate::support::read_lake_of(&pipeline), "b", 2000);
    // SIGKILL runs no destructor: the kernel must stop the broker with weir
    signal(&broker, "KILL");
    broker.wait().unwrap();
    crate::support::wait_until("the broker to stop with weir", 10, || {
        std::net::TcpStream::connect(&address).is_err()
    });
}
