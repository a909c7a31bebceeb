//! Shared helpers: where the built plugins are, the `weir` binary, engines.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use weir::plugin::{Limits, PluginEngine};

/// The directory holding the built `.wasm` plugins.
pub fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_PLUGIN_DIR") {
        return PathBuf::from(dir);
    }
    // CARGO_TARGET_TMPDIR is <target>/tmp
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("wasm32-wasip2")
        .join("release")
}

/// Path of a built plugin, e.g. `weir_plugin_web_vitals`.
pub fn wasm(name: &str) -> PathBuf {
    let path = wasm_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (bash scripts/test.sh does)",
        path.display()
    );
    path
}

/// An engine with the given limits and a compile cache under the target dir.
pub fn engine(limits: Limits) -> Arc<PluginEngine> {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-cache");
    PluginEngine::with_cache_dir(limits, Some(cache)).expect("engine")
}

/// Run the `weir` binary to completion.
pub fn weir(args: &[&str]) -> Output {
    weir_cmd(args).output().expect("run weir")
}

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `weir` binary as a command (compile cache shared with the tests).
pub fn weir_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(args).env(
        "WEIR_CACHE_DIR",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weir-cache"),
    );
    c
}

/// Run a `weir` command to completion, insisting it succeeded (stderr shown otherwise).
pub fn weir_ok(command: &mut Command) -> Output {
    let out = command.output().expect("run weir");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The embedded broker (a real Kafka-protocol broker, tansu) living as long
/// as this value.
pub struct Kafka {
    _broker: weir::ingest::broker::EmbeddedBroker,
    /// bootstrap servers.
    pub brokers: String,
}

/// An embedded broker with `topic` of `partitions` partitions.
pub fn kafka(topic: &str, partitions: i32) -> Kafka {
    let broker =
        weir::ingest::broker::EmbeddedBroker::start_blocking(&[topic.to_string()], partitions)
            .expect("embedded broker (bash scripts/test.sh installs tansu)");
    let brokers = broker.bootstrap_servers();
    Kafka {
        _broker: broker,
        brokers,
    }
}

/// A web-vitals pipeline file in `dir` reading `topic` from `brokers` into `lake_url`.
pub fn write_pipeline(
    dir: &std::path::Path,
    brokers: &str,
    topic: &str,
    lake_url: &str,
    extra: &str,
) -> PathBuf {
    let template = std::fs::read_to_string(repo().join("pipelines/local.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&template).unwrap();
    doc["source"]["brokers"] = toml::Value::String(brokers.into());
    doc["source"]["topic"] = toml::Value::String(topic.into());
    doc["source"]["group"] = toml::Value::String(format!("g-{topic}"));
    doc["plugin"]["path"] =
        toml::Value::String(wasm("weir_plugin_web_vitals").display().to_string());
    doc["lake"]["url"] = toml::Value::String(lake_url.into());
    let extra: toml::Table = toml::from_str(extra).unwrap();
    for (section, values) in extra {
        let table = doc
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        for (k, v) in values.as_table().unwrap() {
            table.as_table_mut().unwrap().insert(k.clone(), v.clone());
        }
    }
    let text = toml::to_string(&doc).unwrap();
    let path = dir.join(format!("{topic}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Send `lines` to `topic`.
pub fn produce(brokers: &str, topic: &str, lines: &[String]) {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let context = Deliveries::default();
    let failed = context.failed.clone();
    let producer: ThreadedProducer<Deliveries> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "2")
        .create_with_context(context)
        .unwrap();
    for line in lines {
        loop {
            match producer.send(BaseRecord::<(), str>::to(topic).payload(line.as_str())) {
                Ok(()) => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} of {} messages not delivered to {topic}",
        lines.len()
    );
}

/// A producer context counting the messages the broker did not take.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            eprintln!("delivery failed: {e}");
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What the lake holds, read through the Delta log of its two tables.
#[derive(Debug, Default)]
pub struct LakeContents {
    /// (event_id, partition value, page_url) of every kept row.
    pub kept: Vec<(String, String, String)>,
    /// (payload, stage, reason) of every dead letter.
    pub dead: Vec<(String, String, String)>,
}

/// Read every committed file of the pipeline's lake.
pub fn read_lake(pipeline: &std::path::Path) -> LakeContents {
    read_lake_of(&weir::pipeline::Pipeline::load(pipeline, &[]).unwrap())
}

/// The active files of one of the lake's tables (read with weir's Delta
/// reader) and their record batches (read with the parquet crate).
pub fn table_batches(
    p: &weir::pipeline::Pipeline,
    kind: weir::lake::TableKind,
) -> (
    Option<i64>,
    Vec<(weir::lake::LakeFile, arrow::record_batch::RecordBatch)>,
) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lake = weir::lake::Lake::open(&p.config.lake, &p.config.name).unwrap();
    let table = lake.table_mut(kind);
    rt.block_on(table.refresh()).unwrap();
    let files = rt
        .block_on(table.files(&p.config.lake.partition_by, None))
        .unwrap();
    let mut out = Vec::new();
    for file in files {
        let bytes = rt.block_on(table.location().get(&file.path)).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            out.push((file.clone(), batch.unwrap()));
        }
    }
    (table.version(), out)
}

/// Read every committed row of a loaded pipeline's lake.
pub fn read_lake_of(p: &weir::pipeline::Pipeline) -> LakeContents {
    use arrow::array::AsArray;
    use weir::lake::TableKind;
    let (_, batches) = table_batches(p, TableKind::Data);
    let mut contents = LakeContents::default();
    for (file, batch) in batches {
        let col = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let (ids, urls) = (col("event_id"), col("page_url"));
        let (ids, urls) = (ids.as_string::<i32>(), urls.as_string::<i32>());
        let date = file.partition_value.clone().unwrap_or_default();
        for r in 0..batch.num_rows() {
            contents.kept.push((
                ids.value(r).to_string(),
                date.clone(),
                urls.value(r).to_string(),
            ));
        }
    }
    for (_, batch) in table_batches(p, TableKind::DeadLetters).1 {
        let col = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let (payload, stage, reason) = (col("payload"), col("stage"), col("reason"));
        let (payload, stage, reason) = (
            payload.as_binary::<i32>(),
            stage.as_string::<i32>(),
            reason.as_string::<i32>(),
        );
        for r in 0..batch.num_rows() {
            contents.dead.push((
                String::from_utf8_lossy(payload.value(r)).into_owned(),
                stage.value(r).to_string(),
                reason.value(r).to_string(),
            ));
        }
    }
    contents
}

/// `n` good events with ids `{prefix}{i}` spread over three days.
pub fn good_events(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| good_event(prefix, i)).collect()
}

/// Event time of good event `i`: one of three days, spread over the day.
fn good_event_ts(i: usize) -> i64 {
    1_795_478_400_000i64 + (i as i64 % 3) * 86_400_000 + (i as i64 * 7919) % 86_400_000
}

/// Good event number `i` with id `{prefix}{i}`.
pub fn good_event(prefix: &str, i: usize) -> String {
    format!(
        r#"{{"event_id":"{prefix}{i}","timestamp":{},"page_url":"https://Shop.example.com/p/{}/?x=1","tti_ms":{},"ttar_ms":12.5,"user_agent":"Mozilla/5.0 (X11; Linux)","country":"de"}}"#,
        good_event_ts(i),
        i % 50,
        100 + i % 900
    )
}

/// The UTC date (`YYYY-MM-DD`) of a good event's index, as [`good_events`] made it.
pub fn good_event_date(i: usize) -> String {
    chrono::DateTime::from_timestamp_millis(good_event_ts(i))
        .unwrap()
        .date_naive()
        .to_string()
}

/// Assert every id `{prefix}0..n` is in the lake exactly once.
pub fn assert_exactly_once(contents: &LakeContents, prefix: &str, n: usize) {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (id, _, _) in &contents.kept {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let missing: Vec<usize> = (0..n)
        .filter(|i| !counts.contains_key(format!("{prefix}{i}").as_str()))
        .collect();
    let duplicated: Vec<(&&str, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        missing.is_empty(),
        "{} events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "{} events duplicated, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    assert_eq!(contents.kept.len(), n);
}

/// Wait until the lake's commits cover `messages` messages, or `timeout`.
pub fn wait_for_lake(
    pipeline: &std::path::Path,
    messages: u64,
    timeout: std::time::Duration,
) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < timeout {
        if read_lake_commits(pipeline) >= messages {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    false
}

fn read_lake_commits(pipeline: &std::path::Path) -> u64 {
    lake_commits(pipeline)
        .iter()
        .filter_map(|c| c.info.get("weir.read").and_then(|v| v.as_u64()))
        .sum()
}

/// Send a signal to a child.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Run one of the independent Python tools in `host/tests/py` with the
/// tools venv (`WEIR_TEST_PYTHON`, set by scripts/test.sh); its stdout as JSON.
pub fn python_tool(script: &str, args: &[&str]) -> serde_json::Value {
    let python = std::env::var("WEIR_TEST_PYTHON")
        .expect("WEIR_TEST_PYTHON: run the tests through scripts/test.sh");
    let out = Command::new(python)
        .arg(repo().join("host/tests/py").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A moto server of this test's own (fresh state), stopped on drop.
pub struct Moto {
    child: std::process::Child,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    recording: tempfile::TempDir,
}

impl Moto {
    /// Start moto server (the binary the test script installed) on a free port.
    pub fn start() -> Moto {
        let bin = std::env::var("WEIR_TEST_MOTO_BIN")
            .expect("WEIR_TEST_MOTO_BIN: run the tests through scripts/test.sh");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let recording = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env(
                "MOTO_RECORDER_FILEPATH",
                recording.path().join("requests.jsonl"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Moto {
            child,
            endpoint,
            recording,
        }
    }

    /// POST `body` to `path` as if signed for `service` (moto routes by
    /// the credential scope); the response body.
    pub fn aws_post(&self, service: &str, path: &str, content_type: &str, body: &str) -> String {
        let auth = format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=test/20261129/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        let url = format!("{}{path}", self.endpoint);
        let content_type = format!("Content-Type: {content_type}");
        curl(&[
            "-X",
            "POST",
            &url,
            "-H",
            &auth,
            "-H",
            &content_type,
            "--data-binary",
            body,
        ])
    }

    /// Create a Lambda function `name` (moto runs it without Docker).
    pub fn lambda_function(&self, name: &str) {
        self.aws_post(
            "moto-api",
            "/moto-api/config",
            "application/json",
            r#"{"lambda":{"use_docker":false}}"#,
        );
        let role = self.aws_post(
            "iam",
            "/",
            "application/x-www-form-urlencoded",
            "Action=CreateRole&Version=2010-05-08&RoleName=weir-notices&AssumeRolePolicyDocument=%7B%7D",
        );
        assert!(role.contains("weir-notices"), "{role}");
        // an empty zip archive is enough for moto
        let create = serde_json::json!({
            "FunctionName": name, "Runtime": "python3.12", "Handler": "index.handler",
            "Role": "arn:aws:iam::123456789012:role/weir-notices",
            "Code": { "ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==" },
        });
        let out = self.aws_post(
            "lambda",
            "/2015-03-31/functions",
            "application/json",
            &create.to_string(),
        );
        assert!(out.contains(name), "{out}");
    }

    /// Record every request from now on.
    pub fn start_recording(&self) {
        self.aws_post(
            "moto-api",
            "/moto-api/recorder/start-recording",
            "application/json",
            "",
        );
    }

    /// The recorded requests (method, url, headers, body decoded).
    pub fn recorded(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.recording.path().join("requests.jsonl"))
            .unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Settings of an AWS client section (`[x.aws]`) pointing at this server.
    pub fn aws_settings(&self) -> String {
        format!(
            "region = \"us-east-1\"\nendpoint = \"{}\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            self.endpoint
        )
    }

    /// Create a bucket.
    pub fn bucket(&self, name: &str) {
        curl(&["-X", "PUT", &format!("{}/{name}", self.endpoint)]);
    }

    /// Upload a file as `bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, file: &std::path::Path) {
        let url = format!("{}/{bucket}/{key}", self.endpoint);
        curl(&["-T", file.to_str().unwrap(), &url]);
    }

    /// Pipeline settings pointing a lake at this server.
    pub fn lake_settings(&self) -> String {
        format!(
            "[lake.s3]\nregion = \"us-east-1\"\nendpoint = \"{}\"\nallow_http = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n",
            self.endpoint
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder in front of a server, that can be taken down (every
/// connection cut, new ones closed at once) and brought back: an outage.
pub struct Outage {
    /// port clients connect to.
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Outage {
    /// Forward 127.0.0.1:<new port> to `upstream` (`host:port`).
    pub fn forward(upstream: &str) -> Outage {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, conns2, upstream) = (up.clone(), conns.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Outage { port, up, conns }
    }

    /// Cut every connection and refuse new ones until [`Outage::end`].
    pub fn begin(&self) {
        self.up.store(false, std::sync::atomic::Ordering::Relaxed);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Serve again.
    pub fn end(&self) {
        self.up.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Produce good events `{prefix}0, 1, ...` in chunks of `chunk` every
/// `pause` until `limit` are sent or `stop` is set; returns how many were sent.
pub fn spawn_producer(
    brokers: &str,
    topic: &str,
    prefix: &'static str,
    chunk: usize,
    pause: std::time::Duration,
    limit: Option<usize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    spawn_mixed_producer(brokers, topic, prefix, chunk, pause, limit, None, stop)
}

/// [`spawn_producer`], plus after every `bad_every`-th good event (from the
/// first) one message that is not JSON (`{"event_id":"bad-<prefix><i>"`):
/// good events `0..sent` and bad ones for every multiple of `bad_every` below `sent`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_mixed_producer(
    brokers: &str,
    topic: &str,
    prefix: &'static str,
    chunk: usize,
    pause: std::time::Duration,
    limit: Option<usize>,
    bad_every: Option<usize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && limit.is_none_or(|l| sent < l) {
            let end = limit.map_or(sent + chunk, |l| (sent + chunk).min(l));
            let mut lines = Vec::with_capacity(end - sent + 1);
            for i in sent..end {
                lines.push(good_event(prefix, i));
                if bad_every.is_some_and(|b| i % b == 0) {
                    lines.push(format!(r#"{{"event_id":"bad-{prefix}{i}""#));
                }
            }
            produce(&brokers, &topic, &lines);
            sent = end;
            std::thread::sleep(pause);
        }
        sent
    })
}

/// What an ingest test needs: an embedded broker with its topic, a scratch
/// directory and a pipeline file reading the topic into a lake.
pub struct Rig {
    /// the broker (lives as long as the rig).
    pub kafka: Kafka,
    /// scratch directory (the local lake is `lake/` in it).
    pub dir: tempfile::TempDir,
    /// the pipeline file.
    pub pipeline: PathBuf,
}

/// A rig for `topic` with `partitions`; the lake is `lake_url` or `<dir>/lake`.
pub fn rig(topic: &str, partitions: i32, lake_url: Option<&str>, extra: &str) -> Rig {
    let kafka = kafka(topic, partitions);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("lake").display().to_string();
    let pipeline = write_pipeline(
        dir.path(),
        &kafka.brokers,
        topic,
        lake_url.unwrap_or(&local),
        extra,
    );
    Rig {
        kafka,
        dir,
        pipeline,
    }
}

impl Rig {
    /// Run `weir ingest --drain --json` to completion; its exit summary.
    pub fn drain(&self) -> serde_json::Value {
        let out = weir_ok(&mut weir_cmd(&[
            "ingest",
            self.pipeline.to_str().unwrap(),
            "--drain",
            "--json",
        ]));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Start `weir ingest` on the rig's pipeline, stdout discarded, stderr as given.
    pub fn spawn_ingest(&self, stderr: std::process::Stdio) -> std::process::Child {
        weir_cmd(&["ingest", self.pipeline.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }
}

/// Run curl with `args` (failing on HTTP errors); its stdout.
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-fsS")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP/1.1 request to `addr`; the status code and body.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// POST `body` to `http://addr/path`.
pub fn http_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    http(addr, "POST", path, body)
}

/// GET `http://addr/path`.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, "")
}

/// Poll `ok` every 100 ms; fail the test after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A pipeline's lake with its data table's log read, and a runtime to
/// ask it more (`false`: no table yet).
fn data_table(pipeline: &std::path::Path) -> (weir::lake::Lake, tokio::runtime::Runtime, bool) {
    let p = weir::pipeline::Pipeline::load(pipeline, &[]).unwrap();
    let mut lake = weir::lake::Lake::open(&p.config.lake, &p.config.name).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exists = rt
        .block_on(lake.table_mut(weir::lake::TableKind::Data).refresh())
        .unwrap();
    (lake, rt, exists)
}

/// The data table's latest version (`-1` before it exists).
pub fn lake_version(pipeline: &std::path::Path) -> i64 {
    data_table(pipeline).0.data().version().unwrap_or(-1)
}

/// weir's commits to a pipeline's data table (streaming updates, not the
/// table's creation or maintenance), oldest first.
pub fn lake_commits(pipeline: &std::path::Path) -> Vec<weir::lake::HistoryEntry> {
    let (lake, rt, exists) = data_table(pipeline);
    if !exists {
        return Vec::new();
    }
    let mut history = rt.block_on(lake.data().history(None)).unwrap_or_default();
    history.retain(|h| h.operation.as_deref() == Some("STREAMING UPDATE"));
    history.reverse();
    history
}

/// A data table's schema for tests that write files themselves: the
/// pipeline's event columns plus the partition column (a date).
pub fn events_table_schema(p: &weir::pipeline::Pipeline) -> arrow::datatypes::Schema {
    let mut fields: Vec<arrow::datatypes::FieldRef> =
        p.schema.arrow().fields().iter().cloned().collect();
    fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
        &p.config.lake.partition_by,
        arrow::datatypes::DataType::Date32,
        true,
    )));
    arrow::datatypes::Schema::new(fields)
}

/// The independent check: the lake read with the `deltalake` Python
/// package (delta-rs's Python reader, not weir's code), as JSON:
/// `{"rows", "distinct", "missing", "duplicated", "unexpected", "files",
/// "orphans", "orphans_listed", "dead", "dead_distinct", "version"}` for
/// ids `{prefix}0..n`. `storage` names S3 options for a lake on S3.
pub fn read_delta(
    lake_url: &str,
    prefix: &str,
    n: usize,
    storage: &[(&str, &str)],
) -> serde_json::Value {
    let mut args = vec![lake_url.to_string(), prefix.to_string(), n.to_string()];
    for (k, v) in storage {
        args.push(format!("{k}={v}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python_tool("read_delta.py", &args)
}

/// Read stderr lines of `child` until one contains `marker`; the rest of
/// that line after the marker. The remaining stderr is drained in the background.
pub fn wait_for_line(child: &mut std::process::Child, marker: &str) -> String {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(i) = line.find(marker) {
            let rest = line[i + marker.len()..].trim().to_string();
            std::thread::spawn(move || for _ in lines {});
            return rest;
        }
    }
    panic!("`{marker}` never printed");
}

/// sha256 of a file, hex (a plugin's digest).
pub fn sha256(path: &std::path::Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}
