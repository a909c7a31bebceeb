//! The broker behind `source.brokers = "embedded"`: a real Kafka-protocol
//! broker (tansu, Apache-2.0, written in Rust) run as a child process that
//! weir owns, with in-memory storage that keeps every message it
//! acknowledges for as long as it runs.
//!
//! Why a child process and not the `tansu-broker` library crate: the library
//! (with the `dynostore` feature its memory storage needs) brings 179 crates
//! weir does not otherwise build (aws-lc-sys, OpenTelemetry, rama, protobuf,
//! Avro, rhai, object_store 0.13, ...) into every build of weir (check, test
//! and release), for a component that only local runs use. The binary is built
//! once per machine by `scripts/tools.sh` and found at start (see
//! [`tansu_binary`]).
//!
//! The child is tied to weir's lifetime twice: [`EmbeddedBroker`]'s `Drop`
//! stops it, and the kernel kills it (`PR_SET_PDEATHSIG`) if weir dies
//! without running destructors (SIGKILL). The parent-death signal follows the
//! thread that spawned the child, so a dedicated thread spawns it and lives
//! exactly as long as the child does.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

/// The tansu release weir is tested with (what `scripts/tools.sh` installs).
pub const TANSU_VERSION: &str = "0.6.0";

/// How long the broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No `tansu` binary was found.
    #[error(
        "embedded broker: no `tansu` binary (looked at $WEIR_TANSU, {searched}); install it with `bash scripts/tools.sh` or `cargo install tansu --version {TANSU_VERSION} --features dynostore`, or point source.brokers at a Kafka cluster"
    )]
    NotInstalled {
        /// where it was looked for.
        searched: String,
    },
    /// The binary could not be started.
    #[error("embedded broker: cannot start {binary}: {source}")]
    Spawn {
        /// the tansu binary.
        binary: PathBuf,
        /// the OS error.
        #[source]
        source: std::io::Error,
    },
    /// It started but did not accept connections in time, or exited.
    #[error("embedded broker {binary} on {address}: {reason}")]
    NotReady {
        /// the tansu binary.
        binary: PathBuf,
        /// the address it was told to listen on.
        address: SocketAddr,
        /// what happened.
        reason: String,
    },
    /// A topic could not be created.
    #[error(
        "embedded broker on {address}: cannot create topic `{topic}` with {partitions} partitions: {reason}"
    )]
    Topic {
        /// the broker's address.
        address: SocketAddr,
        /// the topic.
        topic: String,
        /// partitions asked for.
        partitions: i32,
        /// the broker's or client's answer.
        reason: String,
    },
}

/// A running embedded broker; stopped when dropped.
pub struct EmbeddedBroker {
    address: SocketAddr,
    pid: u32,
    waiter: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("address", &self.address)
            .field("pid", &self.pid)
            .finish()
    }
}

/// The `tansu` binary: `$WEIR_TANSU`, then `tansu` beside the running
/// executable, on `PATH`, and in the tools directory the scripts install to
/// (`$WEIR_TOOLS_DIR` or `~/.cache/weir-tools`, under `tansu/bin`).
pub fn tansu_binary() -> Result<PathBuf, BrokerError> {
    if let Some(path) = std::env::var_os("WEIR_TANSU") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("tansu"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("tansu")));
    }
    let tools = std::env::var_os("WEIR_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir-tools")));
    if let Some(tools) = tools {
        candidates.push(tools.join("tansu/bin/tansu"));
    }
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| BrokerError::NotInstalled {
            searched: candidates
                .iter()
                .filter(|c| !c.starts_with("/usr") && !c.starts_with("/bin"))
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl EmbeddedBroker {
    /// Start a broker on a free 127.0.0.1 port and create `topics`, each
    /// with `partitions` partitions.
    pub async fn start(topics: &[String], partitions: i32) -> Result<Self, BrokerError> {
        let binary = tansu_binary()?;
        let address = free_port().map_err(|source| BrokerError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let broker = Self::spawn(&binary, address)?;
        broker.wait_ready(&binary).await?;
        for topic in topics {
            broker.create_topic(topic, partitions).await?;
        }
        tracing::info!(%address, binary = %binary.display(), pid = broker.pid, "embedded Kafka broker (tansu) started");
        Ok(broker)
    }

    /// [`EmbeddedBroker::start`] for callers without a runtime (start-up
    /// only: a current-thread runtime lives for the call).
    pub fn start_blocking(topics: &[String], partitions: i32) -> Result<Self, BrokerError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| BrokerError::Spawn {
                binary: PathBuf::from("tokio runtime"),
                source,
            })?;
        rt.block_on(Self::start(topics, partitions))
    }

    /// The bootstrap address (`127.0.0.1:port`) other processes can use while this one runs.
    pub fn bootstrap_servers(&self) -> String {
        self.address.to_string()
    }

    fn spawn(binary: &Path, address: SocketAddr) -> Result<Self, BrokerError> {
        let url = format!("tcp://{address}");
        let mut command = Command::new(binary);
        command
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .arg("--silent")
            // tansu logs through RUST_LOG; weir's own filter must not leak into
            // it (WEIR_TANSU_LOG sets tansu's, for debugging the broker)
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        die_with_parent(&mut command);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name("weir-broker".into())
            .spawn(move || match command.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let status = child.wait();
                    tracing::debug!(?status, "embedded broker exited");
                }
                Err(error) => {
                    let _ = tx.send(Err(error));
                }
            })
            .map_err(|source| BrokerError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let spawned = rx
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread ended early")));
        match spawned {
            Ok(pid) => Ok(EmbeddedBroker {
                address,
                pid,
                waiter: Some(waiter),
            }),
            Err(source) => {
                let _ = waiter.join();
                Err(BrokerError::Spawn {
                    binary: binary.to_path_buf(),
                    source,
                })
            }
        }
    }

    async fn wait_ready(&self, binary: &Path) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if self.waiter.as_ref().is_none_or(|w| w.is_finished()) {
                return Err(BrokerError::NotReady {
                    binary: binary.to_path_buf(),
                    address: self.address,
                    reason: "exited at start (its stderr is above)".into(),
                });
            }
            if tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(BrokerError::NotReady {
                    binary: binary.to_path_buf(),
                    address: self.address,
                    reason: format!("not listening after {START_TIMEOUT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), BrokerError> {
        let fail = |reason: String| BrokerError::Topic {
            address: self.address,
            topic: topic.to_string(),
            partitions,
            reason,
        };
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .create()
            .map_err(|e| fail(e.to_string()))?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &options,
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(fail(code.to_string())),
            }
        }
        Ok(())
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let running = self.waiter.as_ref().is_some_and(|w| !w.is_finished());
        if let (true, Ok(pid)) = (running, i32::try_from(self.pid)) {
            // SAFETY: kill(2) with a pid this process spawned and has not
            // reaped yet (the waiter thread reaps it only after it exits).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.join();
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released for the broker).
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Ask the kernel to kill the child when the thread that spawned it (the
/// broker's waiter thread, which lives as long as the child) goes away.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
