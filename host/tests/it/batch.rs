//! The batch path against real warehouses: events ingested through the
//! streaming path, `weir aggregate`, and every aggregated row compared
//! with PostgreSQL's own `count(distinct)`, `avg` and `percentile_cont`
//! over the kept events read back from the lake.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};

use crate::support::*;

/// `n` events over three days with varied metrics (some missing), a few
/// bot user agents (dropped by the plugin), every 10th sent twice (a
/// duplicate delivery) and every 19th line not JSON (dead-lettered).
pub fn batch_events(prefix: &str, n: usize, day: Option<usize>) -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..n {
        let d = day.unwrap_or(i % 3) as i64;
        let ts = 1_795_478_400_000i64 + d * 86_400_000 + (i as i64 * 7919) % 86_400_000;
        let tti = if i % 11 == 0 {
            String::new()
        } else {
            format!(r#","tti_ms":{}.5"#, (i * 37) % 5000)
        };
        let ttar = if i % 13 == 0 {
            String::new()
        } else {
            format!(r#","ttar_ms":{}"#, ((i * 53) % 3000) as f64 / 4.0)
        };
        let ua = if i % 17 == 0 {
            "Googlebot/2.1"
        } else {
            "Mozilla/5.0 (X11; Linux x86_64)"
        };
        let line = format!(
            r#"{{"event_id":"{prefix}{i}","timestamp":{ts},"page_url":"https://Shop.example.com/p/{}?x={i}"{tti}{ttar},"user_agent":"{ua}","country":"de"}}"#,
            i % 5
        );
        if i % 10 == 0 {
            lines.push(line.clone());
        }
        lines.push(line);
        if i % 19 == 0 {
            lines.push(format!(r#"{{"event_id":"{prefix}bad{i}","#));
        }
    }
    lines
}

/// A fresh PostgreSQL database, dropped at the end of the test.
pub struct PgDb {
    /// connection URL of the database.
    pub url: String,
    name: String,
}

fn admin_url() -> String {
    std::env::var("WEIR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl PgDb {
    /// Create a database named after the test.
    pub fn create(tag: &str) -> PgDb {
        let name = format!("weir_{tag}_{}_{}", std::process::id(), rand_suffix());
        pg_exec(&admin_url(), &format!("CREATE DATABASE {name}"));
        let base = admin_url();
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        PgDb { url, name }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = pg_try(
            &admin_url(),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// Run simple-protocol statements on `url`; the messages, or the error.
fn pg_simple(
    url: &str,
    sql: &str,
) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client.simple_query(sql).await
    })
}

fn pg_try(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    pg_simple(url, sql).map(drop)
}

/// Run statements; panics with the server's message on error.
pub fn pg_exec(url: &str, sql: &str) {
    pg_simple(url, sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// Run one query; its rows as text cells (NULL as None).
pub fn pg_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = pg_simple(url, sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// A transaction of the test's holding a table exclusively, so that a
/// load reaching it stops midway; rolled back by [`TableLock::release`].
pub struct TableLock {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl TableLock {
    /// Lock `table` in the database at `url`.
    pub fn hold(url: &str, table: &str) -> TableLock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, conn) = rt
            .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
            .unwrap();
        rt.spawn(conn);
        rt.block_on(client.batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        )))
        .unwrap();
        TableLock { rt, client }
    }

    /// Wait until a weir connection is blocked on it.
    pub fn wait_for_weir(&self, url: &str) {
        wait_until("weir to reach the locked table", 60, || {
            pg_rows(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'weir' AND wait_event_type = 'Lock'")[0][0].as_deref()
                == Some("1")
        });
    }

    /// Roll the transaction back.
    pub fn release(self) {
        self.rt
            .block_on(self.client.batch_execute("ROLLBACK"))
            .unwrap();
    }
}

/// The kept events of a lake: (event_id, event_date, page_url, tti, ttar).
type Kept = Vec<(String, String, String, Option<f64>, Option<f64>)>;

fn read_kept(pipeline: &std::path::Path) -> Kept {
    let p = weir::pipeline::Pipeline::load(pipeline, &[]).unwrap();
    let mut kept = Vec::new();
    for (file, batch) in table_batches(&p, weir::lake::TableKind::Data).1 {
        let col = |n: &str| batch.column(batch.schema().index_of(n).unwrap()).clone();
        let (ids, urls, tti, ttar) = (
            col("event_id"),
            col("page_url"),
            col("tti_ms"),
            col("ttar_ms"),
        );
        // Delta keeps the date in the log (the file's partition value)
        let date = file.partition_value.clone().unwrap();
        let tti = tti.as_primitive::<arrow::datatypes::Float64Type>();
        let ttar = ttar.as_primitive::<arrow::datatypes::Float64Type>();
        for r in 0..batch.num_rows() {
            kept.push((
                ids.as_string::<i32>().value(r).to_string(),
                date.clone(),
                urls.as_string::<i32>().value(r).to_string(),
                tti.is_valid(r).then(|| tti.value(r)),
                ttar.is_valid(r).then(|| ttar.value(r)),
            ));
        }
    }
    kept
}

const COLUMNS: &str = "event_date, page_url, events, tti_samples, avg_tti_ms, p50_tti_ms, p75_tti_ms, p95_tti_ms, \
                       ttar_samples, avg_ttar_ms, p50_ttar_ms, p75_ttar_ms, p95_ttar_ms";

/// PostgreSQL's own figures over `kept`, keyed by (date, url).
fn expected(db: &PgDb, kept: &Kept) -> BTreeMap<(String, String), Vec<Option<String>>> {
    pg_exec(
        &db.url,
        "DROP TABLE IF EXISTS kept; CREATE TABLE kept (event_id text, event_date date, page_url text, tti_ms float8, ttar_ms float8)",
    );
    let num = |v: &Option<f64>| v.map_or("NULL".to_string(), |x| format!("{x:?}::float8"));
    for chunk in kept.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(id, d, u, a, b)| {
                format!(
                    "('{id}', '{d}', '{}', {}, {})",
                    u.replace('\'', "''"),
                    num(a),
                    num(b)
                )
            })
            .collect();
        pg_exec(
            &db.url,
            &format!("INSERT INTO kept VALUES {}", values.join(", ")),
        );
    }
    let pct = |c: &str| {
        ["0.5", "0.75", "0.95"]
            .map(|p| format!("percentile_cont({p}) WITHIN GROUP (ORDER BY {c})"))
            .join(", ")
    };
    let sql = format!(
        "WITH d AS (SELECT DISTINCT ON (event_id) * FROM kept ORDER BY event_id) \
         SELECT event_date, page_url, count(DISTINCT event_id), count(tti_ms), avg(tti_ms), {}, count(ttar_ms), avg(ttar_ms), {} \
         FROM d GROUP BY event_date, page_url ORDER BY event_date, page_url",
        pct("tti_ms"),
        pct("ttar_ms")
    );
    keyed(pg_rows(&db.url, &sql))
}

fn keyed(rows: Vec<Vec<Option<String>>>) -> BTreeMap<(String, String), Vec<Option<String>>> {
    rows.into_iter()
        .map(|r| {
            (
                (r[0].clone().unwrap(), r[1].clone().unwrap()),
                r[2..].to_vec(),
            )
        })
        .collect()
}

/// Assert the warehouse rows equal the expected figures: counts exactly,
/// floats to 1e-9 relative.
fn assert_same(
    actual: &BTreeMap<(String, String), Vec<Option<String>>>,
    expected: &BTreeMap<(String, String), Vec<Option<String>>>,
) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "groups differ"
    );
    for (key, want) in expected {
        let got = &actual[key];
        for (c, (g, w)) in got.iter().zip(want).enumerate() {
            match (g, w) {
                (Some(g), Some(w)) => {
                    let (g, w): (f64, f64) = (g.parse().unwrap(), w.parse().unwrap());
                    assert!(
                        (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                        "{key:?} column {c}: weir {g}, postgres {w}"
                    );
                }
                (None, None) => {}
                _ => panic!("{key:?} column {c}: weir {g:?}, postgres {w:?}"),
            }
        }
    }
}

fn warehouse_rows(db: &PgDb) -> BTreeMap<(String, String), Vec<Option<String>>> {
    keyed(pg_rows(
        &db.url,
        &format!("SELECT {COLUMNS} FROM page_metrics_daily ORDER BY event_date, page_url"),
    ))
}

fn aggregate(pipeline: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["aggregate", pipeline.to_str().unwrap()];
    all.extend_from_slice(args);
    weir(&all)
}

fn aggregate_json(pipeline: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["aggregate", pipeline.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let out = weir_ok(&mut weir_cmd(&all));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn postgres_rows_match_postgres_own_aggregates_and_reloads_are_idempotent() {
    let db = PgDb::create("agg");
    let rig = rig(
        "agg-pg",
        3,
        None,
        &format!("[warehouse]\nurl = \"{}\"\n", db.url),
    );
    produce(&rig.kafka.brokers, "agg-pg", &batch_events("a", 3000, None));
    rig.drain();
    let kept = read_kept(&rig.pipeline);
    assert!(kept.len() > 2000, "{} kept", kept.len());

    let summary = aggregate_json(&rig.pipeline, &["--all"]);
    let parts = summary["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{summary}");
    assert!(parts.iter().all(|p| p["status"] == "loaded"), "{summary}");
    let dups: u64 = parts
        .iter()
        .map(|p| p["report"]["duplicates"].as_u64().unwrap())
        .sum();
    assert!(
        dups > 0,
        "the duplicate deliveries are in the lake and counted once: {summary}"
    );
    let want = expected(&db, &kept);
    let first = warehouse_rows(&db);
    assert_same(&first, &want);
    assert_eq!(first.len(), 15, "3 dates x 5 pages");

    // the audit names the table version read and the plugin
    let audit = pg_rows(
        &db.url,
        "SELECT partition_date, plugin_digest, commits, rows_loaded FROM weir_load_audit ORDER BY partition_date",
    );
    assert_eq!(audit.len(), 3);
    let digest = summary["plugin_digest"].as_str().unwrap();
    for row in &audit {
        assert_eq!(row[1].as_deref(), Some(digest));
        assert!(row[2].as_deref().unwrap().starts_with('v'), "{row:?}");
        assert_eq!(row[3].as_deref(), Some("5"));
    }

    // running it again changes nothing but the audit trail
    aggregate_json(&rig.pipeline, &["--all"]);
    assert_eq!(warehouse_rows(&db), first);
    assert_eq!(
        pg_rows(&db.url, "SELECT count(*) FROM weir_load_audit")[0][0].as_deref(),
        Some("6")
    );

    // late events for the first date update exactly that date
    let dates: Vec<String> = first
        .keys()
        .map(|(d, _)| d.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    produce(
        &rig.kafka.brokers,
        "agg-pg",
        &batch_events("late", 400, Some(0)),
    );
    rig.drain();
    let kept = read_kept(&rig.pipeline);
    aggregate_json(&rig.pipeline, &["--date", &dates[0]]);
    let after = warehouse_rows(&db);
    assert_same(&after, &expected(&db, &kept));
    for (key, row) in &after {
        if key.0 == dates[0] {
            assert_ne!(row, &first[key], "{key:?} should have changed");
        } else {
            assert_eq!(row, &first[key], "{key:?} should not have changed");
        }
    }

    // the same SQL pushed down: the cleaned rows are copied into the
    // warehouse and PostgreSQL runs the query; the two tables agree
    let pushed = aggregate_json(
        &rig.pipeline,
        &[
            "--all",
            "--set",
            "aggregate.engine=warehouse",
            "--set",
            "warehouse.table=page_metrics_pushed",
        ],
    );
    let parts = pushed["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{pushed}");
    assert!(
        parts
            .iter()
            .all(|p| p["status"] == "loaded" && p["report"]["groups"] == 5),
        "{pushed}"
    );
    let in_warehouse = keyed(pg_rows(
        &db.url,
        &format!("SELECT {COLUMNS} FROM page_metrics_pushed ORDER BY event_date, page_url"),
    ));
    assert_same(&in_warehouse, &after);
    assert_same(&in_warehouse, &expected(&db, &kept));

    // Redshift's form of the same aggregation (its sort-based aggregates
    // share one ORDER BY per statement: the percentiles of each column in
    // a temporary table, joined to the rest on the keys, here null-safe)
    // gives the same figures in PostgreSQL
    let p = weir::pipeline::Pipeline::load(&rig.pipeline, &[]).unwrap();
    let split = p
        .config
        .aggregate
        .as_ref()
        .unwrap()
        .statements("event_date", &[], &["page_url"]);
    assert_eq!(split.setup.len(), 3, "{split:?}");
    let mut script = vec!["CREATE TEMP VIEW events AS SELECT * FROM kept".to_string()];
    script.extend(split.setup);
    script.push(format!(
        "SELECT {COLUMNS} FROM (\n{}\n) s ORDER BY event_date, page_url",
        split.select
    ));
    assert_same(
        &keyed(pg_rows(&db.url, &script.join(";\n"))),
        &expected(&db, &kept),
    );
    let audit = pg_rows(
        &db.url,
        "SELECT count(*), min(rows_loaded), sum(rows_read) FROM weir_load_audit WHERE target_table = 'page_metrics_pushed'",
    );
    assert_eq!(audit[0][0].as_deref(), Some("3"), "{audit:?}");
    assert_eq!(audit[0][1].as_deref(), Some("5"), "{audit:?}");
    assert_eq!(
        audit[0][2].as_deref().map(|n| n.parse::<u64>().unwrap()),
        Some(
            parts
                .iter()
                .map(|p| p["report"]["rows_read"].as_u64().unwrap())
                .sum::<u64>()
        )
    );
    // and a second pushed-down load leaves it as it was
    aggregate_json(
        &rig.pipeline,
        &[
            "--all",
            "--set",
            "aggregate.engine=warehouse",
            "--set",
            "warehouse.table=page_metrics_pushed",
        ],
    );
    assert_same(
        &keyed(pg_rows(
            &db.url,
            &format!("SELECT {COLUMNS} FROM page_metrics_pushed ORDER BY event_date, page_url"),
        )),
        &in_warehouse,
    );
}

#[test]
fn sqlite_holds_the_same_rows_and_bad_partitions_fail_alone() {
    let db = PgDb::create("aggsl");
    let scratch = tempfile::tempdir().unwrap();
    let sqlite = scratch.path().join("wh.db");
    let rig = rig(
        "agg-sl",
        2,
        None,
        &format!("[warehouse]\nurl = \"sqlite://{}\"\n", sqlite.display()),
    );
    produce(&rig.kafka.brokers, "agg-sl", &batch_events("s", 1500, None));
    rig.drain();
    let kept = read_kept(&rig.pipeline);
    let summary = aggregate_json(&rig.pipeline, &["--all"]);
    assert_eq!(summary["partitions"].as_array().unwrap().len(), 3);

    let sqlite_rows = |sql: &str| -> Vec<Vec<Option<String>>> {
        let conn = rusqlite::Connection::open(&sqlite).unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => None,
                    rusqlite::types::ValueRef::Integer(x) => Some(x.to_string()),
                    rusqlite::types::ValueRef::Real(x) => Some(x.to_string()),
                    rusqlite::types::ValueRef::Text(t) => {
                        Some(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Blob(_) => None,
                })
                .collect())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let table = || {
        keyed(sqlite_rows(&format!(
            "SELECT {COLUMNS} FROM page_metrics_daily ORDER BY event_date, page_url"
        )))
    };
    let first = table();
    assert_same(&first, &expected(&db, &kept));
    aggregate_json(&rig.pipeline, &["--all"]);
    assert_eq!(table(), first, "a second load leaves the table as it was");
    assert_eq!(
        sqlite_rows("SELECT count(*) FROM weir_load_audit")[0][0].as_deref(),
        Some("6")
    );

    // `warehouse show` prints the rows
    let out = weir_ok(&mut weir_cmd(&[
        "warehouse",
        "show",
        rig.pipeline.to_str().unwrap(),
        "--top",
        "2",
        "--order-by",
        "p75_tti_ms",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("p75_tti_ms") && text.lines().count() == 2 + 3 * 2,
        "{text}"
    );

    // a date without data: an explicit line, its rows left alone unless --replace-empty
    let dates: Vec<String> = first
        .keys()
        .map(|(d, _)| d.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let out = aggregate(&rig.pipeline, &["--date", "2020-01-01"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2020-01-01: no data"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // a committed file that is missing fails its partition, naming it; the others load
    let p = weir::pipeline::Pipeline::load(&rig.pipeline, &[]).unwrap();
    let lake = std::path::PathBuf::from(&p.config.lake.url);
    let victim = walk(&lake)
        .into_iter()
        .filter(|f| {
            let f = f.to_string_lossy();
            !f.contains("_delta_log") && !f.contains("_dead_letters")
        })
        .find(|f| f.to_string_lossy().contains(&dates[1]))
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    sqlite_rows("SELECT 1"); // the database still opens
    {
        let conn = rusqlite::Connection::open(&sqlite).unwrap();
        conn.execute("UPDATE page_metrics_daily SET events = -1", [])
            .unwrap();
    }
    let out = aggregate(&rig.pipeline, &["--all"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let name = victim.file_name().unwrap().to_string_lossy();
    assert!(
        text.contains(&format!("{}: FAILED", dates[1])) && text.contains(name.as_ref()),
        "{text}"
    );
    let after = table();
    for (key, row) in &after {
        let events = row[0].as_deref().unwrap();
        if key.0 == dates[1] {
            assert_eq!(events, "-1", "the failed date keeps its previous rows");
        } else {
            assert_ne!(events, "-1", "the other dates were loaded");
        }
    }

    // --replace-empty deletes a selected date's rows when it has no data
    {
        let conn = rusqlite::Connection::open(&sqlite).unwrap();
        conn.execute(
            "INSERT INTO page_metrics_daily (event_date, page_url, events, tti_samples, ttar_samples) VALUES ('2020-01-01', '/old', 7, 0, 0)",
            [],
        )
        .unwrap();
    }
    let old_rows = || {
        sqlite_rows("SELECT count(*) FROM page_metrics_daily WHERE event_date = '2020-01-01'")[0][0]
            .clone()
    };
    let out = aggregate(&rig.pipeline, &["--date", "2020-01-01"]);
    assert!(out.status.success());
    assert_eq!(
        old_rows().as_deref(),
        Some("1"),
        "without --replace-empty the rows stay"
    );
    let out = aggregate(&rig.pipeline, &["--date", "2020-01-01", "--replace-empty"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("2020-01-01: no data; its warehouse rows were deleted")
    );
    assert_eq!(old_rows().as_deref(), Some("0"));
    assert!(
        table().keys().any(|(d, _)| d == &dates[0]),
        "other dates untouched"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn postgres_cut_mid_load_keeps_previous_rows_and_a_rerun_succeeds() {
    let db = PgDb::create("aggcut");
    let rig = rig(
        "agg-cut",
        1,
        None,
        &format!(
            // the parameterised INSERT path (Redshift's) against a real server
            "[warehouse]\nurl = \"{}\"\nconnect_timeout_secs = 3\nload = \"insert\"\n",
            db.url
        ),
    );
    produce(&rig.kafka.brokers, "agg-cut", &batch_events("c", 600, None));
    rig.drain();
    aggregate_json(&rig.pipeline, &["--all"]);
    let before = warehouse_rows(&db);
    assert_eq!(before.len(), 15);

    // weir connects through a forwarder that the test can cut
    let outage = Outage::forward("127.0.0.1:5432");
    let via = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", outage.port));
    let pipeline = rig.pipeline.to_str().unwrap().to_string();
    let set = format!("warehouse.url={via}");
    // a transaction of the test's holds the table, so the load stops midway
    let lock = TableLock::hold(&db.url, "page_metrics_daily");
    let child = weir_cmd(&["aggregate", &pipeline, "--all", "--set", &set])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    lock.wait_for_weir(&db.url);
    outage.begin(); // the server goes away mid-transaction
    let out = child.wait_with_output().unwrap();
    lock.release();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("page_metrics_daily")
            && err.contains(&format!("127.0.0.1:{}", outage.port))
            && err.contains("database weir_aggcut"),
        "{err}"
    );
    assert_eq!(warehouse_rows(&db), before, "previous rows intact");

    // while it is down: a clear error naming host, database and table
    let out = weir(&["aggregate", &pipeline, "--all", "--set", &set]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("page_metrics_daily"),
        "{err}"
    );

    outage.end();
    let summary = aggregate_json(&rig.pipeline, &["--all", "--set", &set]);
    assert_eq!(summary["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(warehouse_rows(&db), before);
    assert_eq!(
        pg_rows(&db.url, "SELECT count(*) FROM weir_load_audit")[0][0].as_deref(),
        Some("6")
    );
}

/// A user's own `aggregate.sql` (grouped by country and device class, into
/// a table of its own) loads exactly what DuckDB computes with the same
/// query over the table read by the `deltalake` package; `weir validate`
/// plans the query and points at a wrong column.
#[test]
fn a_user_defined_query_loads_what_duckdb_computes_over_the_delta_table() {
    let scratch = tempfile::tempdir().unwrap();
    let sqlite = scratch.path().join("wh.db");
    let sql = "SELECT event_date, country, device_class, COUNT(DISTINCT event_id) AS events, \
               AVG(tti_ms) AS avg_tti_ms, MAX(ttar_ms) AS max_ttar_ms \
               FROM events WHERE tti_ms IS NOT NULL GROUP BY event_date, country, device_class";
    let rig = rig(
        "agg-user",
        2,
        None,
        &format!(
            "[warehouse]\nurl = \"sqlite://{}\"\ntable = \"country_devices\"\n[aggregate]\nsql = \"{sql}\"\n",
            sqlite.display()
        ),
    );
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile",
        "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X)",
    ];
    let countries = [
        r#","country":"de""#,
        r#","country":"fr""#,
        r#","country":"us""#,
        "",
    ];
    let lines: Vec<String> = (0..1200)
        .map(|i| {
            let ts = 1_795_478_400_000i64 + (i as i64 / 600) * 86_400_000 + i as i64 * 1000;
            let tti = if i % 9 == 0 { String::new() } else { format!(r#","tti_ms":{}.25"#, (i * 41) % 4000) };
            format!(
                r#"{{"event_id":"u{i}","timestamp":{ts},"page_url":"https://shop.example.com/p/{}"{tti},"ttar_ms":{}{},"user_agent":"{}"}}"#,
                i % 4,
                (i * 13) % 900,
                countries[i % 4],
                agents[i % 3]
            )
        })
        .collect();
    produce(&rig.kafka.brokers, "agg-user", &lines);
    rig.drain();
    let summary = aggregate_json(&rig.pipeline, &["--all"]);
    let parts = summary["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{summary}");
    assert!(parts.iter().all(|p| p["status"] == "loaded"), "{summary}");

    let conn = rusqlite::Connection::open(&sqlite).unwrap();
    let mut stmt = conn
        .prepare("SELECT event_date, country, device_class, events, avg_tti_ms, max_ttar_ms FROM country_devices ORDER BY 1, 2 NULLS FIRST, 3")
        .unwrap();
    let ours: Vec<Vec<rusqlite::types::Value>> = stmt
        .query_map([], |r| (0..6).map(|i| r.get(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let lake = rig.dir.path().join("lake");
    let theirs = python_tool(
        "duckdb_query.py",
        &[
            lake.to_str().unwrap(),
            &format!("{sql} ORDER BY 1, 2 NULLS FIRST, 3"),
        ],
    );
    let theirs = theirs.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len(), "{ours:?}\n{theirs:?}");
    assert_eq!(
        ours.len(),
        2 * 4 * 3,
        "2 dates x 4 countries (one null) x 3 device classes"
    );
    for (a, b) in ours.iter().zip(theirs) {
        let b = b.as_array().unwrap();
        for (x, y) in a.iter().zip(b) {
            use rusqlite::types::Value as V;
            let same = match (x, y) {
                (V::Null, serde_json::Value::Null) => true,
                (V::Text(x), serde_json::Value::String(y)) => x == y,
                (V::Integer(x), y) => y.as_f64() == Some(*x as f64),
                (V::Real(x), y) => y
                    .as_f64()
                    .is_some_and(|y| (x - y).abs() <= 1e-9 * y.abs().max(1.0)),
                _ => false,
            };
            assert!(same, "weir {a:?}, duckdb {b:?}");
        }
    }

    // `weir query`: ad-hoc SQL over the rows as stored and as re-cleaned
    let count = |relation: &str, date: Option<&str>| -> serde_json::Value {
        let sql =
            format!("SELECT count(*) AS n, count(DISTINCT event_date) AS dates FROM {relation}");
        let mut args = vec![
            "query",
            rig.pipeline.to_str().unwrap(),
            sql.as_str(),
            "--json",
        ];
        if let Some(d) = date {
            args.extend(["--date", d]);
        }
        let out = weir_ok(&mut weir_cmd(&args));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    };
    let total = python_tool(
        "duckdb_query.py",
        &[lake.to_str().unwrap(), "SELECT count(*) FROM events"],
    );
    let stored = count("lake", None);
    assert_eq!(stored["n"], total[0][0], "{stored}");
    assert_eq!(stored["dates"], 2);
    assert_eq!(
        count("events", None)["n"],
        total[0][0],
        "the plugin is idempotent"
    );
    let first = ours[0][0].clone();
    let rusqlite::types::Value::Text(first) = first else {
        panic!("{first:?}")
    };
    let one = count("events", Some(&first));
    assert_eq!(one["dates"], 1, "{one}");
    let csv = weir_ok(&mut weir_cmd(&[
        "query",
        rig.pipeline.to_str().unwrap(),
        "SELECT device_class, count(*) AS n FROM events GROUP BY device_class ORDER BY device_class",
        "--csv",
    ]));
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.starts_with("device_class,n\ndesktop,"), "{csv}");

    // validate plans the query: a wrong column is named with where it is
    let out = weir_cmd(&[
        "validate",
        rig.pipeline.to_str().unwrap(),
        "--set",
        "aggregate.sql=SELECT event_date,\n  no_such_column FROM events",
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no_such_column") && stderr.contains("line 2"),
        "{stderr}"
    );
    let out = weir_ok(&mut weir_cmd(&["validate", rig.pipeline.to_str().unwrap()]));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("aggregate: ok (event_date Date32, country Utf8")
    );
}

/// A date far larger than `aggregate.memory_limit`: the engine spills to
/// disk instead of refusing it, and every figure equals DuckDB's over the
/// same files (`weir bench aggregate` compares them row by row).
#[test]
fn a_date_past_the_memory_limit_spills_and_every_figure_equals_duckdb() {
    let scratch = tempfile::tempdir().unwrap();
    let python =
        std::env::var("WEIR_TEST_PYTHON").expect("WEIR_TEST_PYTHON: run through scripts/test.sh");
    let spill = scratch.path().join("spill");
    let out = weir_ok(&mut weir_cmd(&[
        "bench",
        "aggregate",
        repo().join("pipelines/local.toml").to_str().unwrap(),
        "--events",
        "300000",
        "--days",
        "1",
        "--lake",
        scratch.path().join("lake").to_str().unwrap(),
        "--duckdb-python",
        &python,
        "--set",
        "aggregate.memory_limit=64MiB",
        "--set",
        &format!("aggregate.spill_dir={}", spill.display()),
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["lake_rows"].as_u64().unwrap() > 200_000, "{report}");
    assert_eq!(report["dates"], 1, "{report}");
    for phase in ["weir", "weir_reapplying"] {
        assert!(
            report[phase]["spilled_bytes"].as_u64().unwrap() > 0,
            "{phase}: {report}"
        );
        assert_eq!(
            report[phase]["groups"], report["duckdb"]["groups"],
            "{report}"
        );
    }
    assert_eq!(report["mismatches"], 0, "{report}");
}

/// `weir reprocess` with another plugin version: one Delta commit replaces
/// the date's files by files of the new version, which the `deltalake`
/// package reads back (only new files for that date, the same events);
/// the other dates keep their files; the date is loaded again and its
/// audit row names the new digest.
#[test]
fn reprocess_replaces_a_date_with_the_new_versions_files_and_reloads_it() {
    let scratch = tempfile::tempdir().unwrap();
    let sqlite = scratch.path().join("wh.db");
    let rig = rig(
        "agg-re",
        2,
        None,
        &format!("[warehouse]\nurl = \"sqlite://{}\"\n", sqlite.display()),
    );
    produce(&rig.kafka.brokers, "agg-re", &batch_events("r", 900, None));
    rig.drain();
    aggregate_json(&rig.pipeline, &["--all"]);
    let lake = rig.dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let before = python_tool("delta_files.py", &[lake]);
    let files_of = |listing: &serde_json::Value, date: &str| -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = listing["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["partition"] == date)
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_string(),
                    f["rows"].as_u64().unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let dates: Vec<String> = {
        let mut d: Vec<String> = before["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["partition"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        d.dedup();
        d
    };
    assert_eq!(dates.len(), 3, "{before}");
    let ids = |date: &str| {
        python_tool(
            "duckdb_query.py",
            &[
                lake,
                &format!(
                    "SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_date = DATE '{date}'"
                ),
            ],
        )
    };
    let ids_before = ids(&dates[0]);

    // the Python build of the same rules: same schema, another digest
    let new_plugin = wasm("weir_plugin_web_vitals_py");
    let new_digest = sha256(&new_plugin);
    let plugin_set = format!("plugin.path={}", new_plugin.display());
    let out = weir_ok(&mut weir_cmd(&[
        "reprocess",
        rig.pipeline.to_str().unwrap(),
        "--date",
        &dates[0],
        "--set",
        &plugin_set,
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["plugin_digest"], new_digest.as_str(), "{report}");
    assert!(report["files_added"].as_u64().unwrap() >= 1, "{report}");

    let after = python_tool("delta_files.py", &[lake]);
    let new_files = files_of(&after, &dates[0]);
    assert!(!new_files.is_empty());
    for (path, _) in &new_files {
        assert!(
            path.contains(&new_digest[..8]),
            "{path} is not the new version's"
        );
    }
    let old_paths: Vec<String> = files_of(&before, &dates[0])
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        new_files.iter().all(|(p, _)| !old_paths.contains(p)),
        "old files remain"
    );
    assert_eq!(
        new_files.iter().map(|(_, r)| r).sum::<u64>(),
        report["rows_written"].as_u64().unwrap()
    );
    for date in &dates[1..] {
        assert_eq!(
            files_of(&after, date),
            files_of(&before, date),
            "{date} untouched"
        );
    }
    assert_eq!(ids(&dates[0]), ids_before, "the same events, once each");

    // the date was loaded again, its audit row naming the new version
    let conn = rusqlite::Connection::open(&sqlite).unwrap();
    let (plugin, lake_digests): (String, String) = conn
        .query_row(
            "SELECT plugin_digest, lake_plugin_digests FROM weir_load_audit WHERE partition_date = ?1 ORDER BY loaded_at DESC, rowid DESC LIMIT 1",
            [&dates[0]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(plugin, new_digest);
    assert_eq!(lake_digests, new_digest[..8]);

    // the pipeline's own plugin re-cleans only the files another digest
    // wrote (the reprocessed date); its own files are read as written,
    // unless asked to re-apply it everywhere
    let recleaned = |summary: &serde_json::Value| -> BTreeMap<String, (u64, u64)> {
        summary["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let r = &p["report"];
                (
                    p["date"].as_str().unwrap().to_string(),
                    (
                        r["rows_recleaned"].as_u64().unwrap(),
                        r["rows_read"].as_u64().unwrap(),
                    ),
                )
            })
            .collect()
    };
    let own = recleaned(&aggregate_json(&rig.pipeline, &["--all"]));
    assert_eq!(own.len(), 3, "{own:?}");
    for (date, (cleaned, read)) in &own {
        assert!(*read > 0, "{own:?}");
        let expected = if *date == dates[0] { *read } else { 0 };
        assert_eq!(*cleaned, expected, "{date}: {own:?}");
    }
    let every = recleaned(&aggregate_json(
        &rig.pipeline,
        &["--all", "--set", "aggregate.reapply_own_files=true"],
    ));
    for (date, (cleaned, read)) in &every {
        assert_eq!(cleaned, read, "{date}: {every:?}");
    }
}

/// The Redshift pushdown's staging, against S3 (moto; no Redshift here, so
/// `--explain` stages the dates and prints the statements without running
/// them): when the running plugin wrote every file of a date, its manifest
/// names exactly the snapshot's files with their sizes; under another
/// plugin version, weir writes the re-cleaned rows as Parquet (the lake's
/// columns without the partition column) and the manifest names those.
/// The statements copy each manifest, and the shorthand's percentiles of
/// two columns are split into one `ORDER BY` per statement.
#[test]
fn redshift_pushdown_copies_the_snapshots_files_or_restaged_ones_from_s3() {
    let moto = Moto::start();
    moto.bucket("weir");
    let extra = format!(
        "{}\n[warehouse]\nurl = \"redshift://weir:secret@127.0.0.1:1/dev\"\n\n[warehouse.copy]\n\
         staging_url = \"s3://weir/staging\"\niam_role = \"arn:aws:iam::123456789012:role/redshift-copy\"\n",
        moto.lake_settings()
    );
    let rig = rig("agg-rs", 2, Some("s3://weir/lake"), &extra);
    produce(&rig.kafka.brokers, "agg-rs", &batch_events("rs", 900, None));
    rig.drain();
    let pipeline = rig.pipeline.to_str().unwrap();
    let explain = |more: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "aggregate",
            pipeline,
            "--all",
            "--explain",
            "--json",
            "--set",
            "aggregate.engine=warehouse",
        ];
        args.extend_from_slice(more);
        let out = weir_ok(&mut weir_cmd(&args));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let object = |url: &str| -> Vec<u8> {
        let key = url.strip_prefix("s3://").unwrap();
        // signed as moto's S3 expects (it refuses anonymous reads)
        let out = std::process::Command::new("curl")
            .args([
                "-sf",
                "-H",
                "Authorization: AWS4-HMAC-SHA256 Credential=test/20261129/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
                &format!("{}/{key}", moto.endpoint),
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            let listing = std::process::Command::new("curl")
                .args(["-s", &format!("{}/weir?prefix=staging/", moto.endpoint)])
                .output()
                .unwrap();
            panic!(
                "GET {url}: the bucket holds {}",
                String::from_utf8_lossy(&listing.stdout)
            );
        }
        out.stdout
    };
    let manifest = |url: &str| -> Vec<(String, u64)> {
        let m: serde_json::Value = serde_json::from_slice(&object(url)).unwrap();
        let mut entries: Vec<(String, u64)> = m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["mandatory"], true, "{m}");
                (
                    e["url"].as_str().unwrap().to_string(),
                    e["meta"]["content_length"].as_u64().unwrap(),
                )
            })
            .collect();
        entries.sort();
        entries
    };
    let out = weir_ok(&mut weir_cmd(&["lake", "files", pipeline, "--json"]));
    let mut snapshot: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        snapshot
            .entry(f["partition_value"].as_str().unwrap().to_string())
            .or_default()
            .push((
                format!("s3://weir/lake/{}", f["path"].as_str().unwrap()),
                f["bytes"].as_u64().unwrap(),
            ));
    }
    assert_eq!(snapshot.len(), 3, "{snapshot:?}");

    // the running plugin wrote every file: the snapshot's files as they are
    let own = explain(&[]);
    let staged = own["staged"].as_array().unwrap();
    assert_eq!(staged.len(), 3, "{own}");
    for s in staged {
        assert_eq!(s["from"], "snapshot", "{own}");
        let mut want = snapshot[s["date"].as_str().unwrap()].clone();
        want.sort();
        assert_eq!(manifest(s["manifest_url"].as_str().unwrap()), want);
    }
    let statements: Vec<&str> = own["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let copies: Vec<&&str> = statements
        .iter()
        .filter(|s| s.starts_with("COPY \"weir_events_raw\" FROM 's3://weir/staging/"))
        .collect();
    assert_eq!(copies.len(), 3, "{statements:#?}");
    assert!(
        copies.iter().all(|c| c.ends_with(
            "IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy' FORMAT AS PARQUET MANIFEST"
        )),
        "{copies:?}"
    );
    for table in [
        "weir_deduplicated",
        "weir_percentiles_1",
        "weir_percentiles_2",
    ] {
        assert!(
            statements
                .iter()
                .any(|s| s.starts_with(&format!("CREATE TEMP TABLE {table} AS"))),
            "{statements:#?}"
        );
    }
    for s in &statements {
        assert!(
            s.matches("WITHIN GROUP (ORDER BY ").count() <= 3
                && (s.matches("ORDER BY tti_ms").count() == 0
                    || s.matches("ORDER BY ttar_ms").count() == 0),
            "one ORDER BY per statement: {s}"
        );
    }
    assert!(
        statements
            .last()
            .unwrap()
            .starts_with("INSERT INTO \"page_metrics_daily\""),
        "{statements:#?}"
    );

    // another plugin version: the rows re-cleaned by it, staged as Parquet
    let other = wasm("weir_plugin_web_vitals_py");
    let plugin_set = format!("plugin.path={}", other.display());
    let restaged = explain(&["--set", &plugin_set]);
    // the layout of the lake's own files (the partition column is in the log)
    let parquet_columns = |data: bytes::Bytes| -> Vec<String> {
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    let first_file = &snapshot.values().next().unwrap()[0].0;
    let lake_columns = parquet_columns(bytes::Bytes::from(object(first_file)));
    assert!(!lake_columns.contains(&"event_date".to_string()));
    let mut rows_per_date: BTreeMap<String, usize> = BTreeMap::new();
    for (_, date, ..) in read_kept(&rig.pipeline) {
        *rows_per_date.entry(date).or_default() += 1;
    }
    let staged = restaged["staged"].as_array().unwrap();
    assert_eq!(staged.len(), 3, "{restaged}");
    for s in staged {
        assert_eq!(s["from"], "recleaned", "{restaged}");
        let date = s["date"].as_str().unwrap();
        let mut rows = 0;
        for (url, bytes) in manifest(s["manifest_url"].as_str().unwrap()) {
            assert!(url.starts_with("s3://weir/staging/"), "{url}");
            let data = bytes::Bytes::from(object(&url));
            assert_eq!(data.len() as u64, bytes, "{url}");
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let names: Vec<String> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                assert_eq!(names, lake_columns, "{url}");
                rows += batch.num_rows();
            }
        }
        assert_eq!(rows, rows_per_date[date], "{date}: every kept row, once");
    }
}
