//! The integration harness: a real broker, the real daemon binary, unique names per test,
//! and an independent model of the fold to check results against.
//!
//! The broker comes from `KAFKA_BOOTSTRAP_SERVERS` (CI and `kafka/local-kafka start`). When
//! it is unset and a Docker engine answers, one Apache Kafka container is started with
//! testcontainers for the whole run. Otherwise the test fails and says how to start a broker:
//! a test that needs Kafka never passes without it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub const BIN: &str = env!("CARGO_BIN_EXE_hello-streams");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The broker every test uses.
pub fn bootstrap() -> String {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| {
            if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
                if !servers.trim().is_empty() {
                    return servers;
                }
            }
            if docker_available() {
                return containers::start_kafka();
            }
            panic!(
                "no Kafka broker: set KAFKA_BOOTSTRAP_SERVERS (start one with `kafka/local-kafka start` \
                 and `eval $(kafka/local-kafka env)`), or run with a Docker engine for testcontainers"
            );
        })
        .clone()
}

fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

mod containers {
    use std::sync::OnceLock;

    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, GenericImage, ImageExt};

    static KEEP: OnceLock<(tokio::runtime::Runtime, ContainerAsync<GenericImage>)> =
        OnceLock::new();

    /// One KRaft broker for the whole test binary, advertised on a fixed host port so the
    /// address the broker hands out is the one the tests can reach.
    pub fn start_kafka() -> String {
        let port = super::free_port();
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime for testcontainers");
        let container = runtime.block_on(async {
            GenericImage::new("apache/kafka", "4.4.0")
                .with_wait_for(WaitFor::message_on_stdout("Kafka Server started"))
                .with_mapped_port(port, 9092.tcp())
                .with_env_var("KAFKA_NODE_ID", "1")
                .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
                .with_env_var("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
                .with_env_var(
                    "KAFKA_ADVERTISED_LISTENERS",
                    format!("PLAINTEXT://127.0.0.1:{port}"),
                )
                .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
                .with_env_var(
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                )
                .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
                .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
                .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
                .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
                .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
                .start()
                .await
                .expect("start apache/kafka with testcontainers")
        });
        let _ = KEEP.set((runtime, container));
        format!("127.0.0.1:{port}")
    }
}

/// A port nothing listens on, for a daemon to bind next. Picked below the kernel's ephemeral
/// range (32768-60999): a port from there (bind to port 0) can become some client's source
/// port before the daemon binds it, which once failed a test with "Address already in use".
/// A configuration from `field=value` overrides alone, loaded as the daemon loads its own.
pub fn load_config(overrides: Vec<String>) -> hello_streams::config::Config {
    hello_streams::config::load(&hello_streams::config::Sources {
        file: None,
        env: Vec::new(),
        overrides,
    })
    .expect("config")
}

pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test processes running side by side start in different places.
    let offset = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let port = (FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {FIRST}..{}", FIRST + SPAN)
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The topics and ids of one test's application.
#[derive(Clone, Debug)]
pub struct App {
    pub id: String,
    pub input: String,
    pub output: String,
    pub dlq: String,
    /// The window output topic (`topics.windows`).
    pub windows: String,
    pub partitions: i32,
    pub state_root: PathBuf,
    _tmp: std::sync::Arc<tempfile::TempDir>,
}

impl App {
    pub fn new(name: &str, partitions: i32) -> App {
        let id = unique(name);
        let tmp = tempfile::tempdir().expect("temp dir");
        App {
            input: format!("{id}-events"),
            output: format!("{id}-counts"),
            dlq: format!("{id}-dlq"),
            windows: format!("{id}-windows"),
            partitions,
            state_root: tmp.path().to_owned(),
            id,
            _tmp: std::sync::Arc::new(tmp),
        }
    }

    pub fn changelog(&self) -> String {
        format!("{}-hello-store-changelog", self.id)
    }

    pub fn windows_changelog(&self) -> String {
        format!("{}-hello-windows-changelog", self.id)
    }

    /// A state directory per instance, as separate machines would have.
    pub fn state_dir(&self, instance: &str) -> PathBuf {
        self.state_root.join(instance)
    }

    pub fn daemon(&self, instance: &str) -> DaemonBuilder {
        DaemonBuilder {
            app: self.clone(),
            instance: instance.to_owned(),
            extra: Vec::new(),
            envs: Vec::new(),
            config_file: None,
            tls_ca: None,
            tls_identity: None,
        }
    }
}

pub struct DaemonBuilder {
    app: App,
    instance: String,
    extra: Vec<String>,
    envs: Vec<(String, String)>,
    /// `Some`: `--config FILE`, which then also names the brokers.
    config_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_identity: Option<(PathBuf, PathBuf)>,
}

impl DaemonBuilder {
    pub fn set(mut self, field_value: &str) -> Self {
        self.extra.push(field_value.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Runs with `--config FILE`, which then also names the brokers (no `--bootstrap-servers`).
    pub fn config_file(mut self, path: PathBuf) -> Self {
        self.config_file = Some(path);
        self
    }

    /// TLS on both query ports with this certificate and key; `ca` signed it (readiness is
    /// then checked over HTTPS, trusting `ca`).
    pub fn tls(mut self, cert: &Path, key: &Path, ca: &Path) -> Self {
        for (field, path) in [("cert_file", cert), ("key_file", key), ("ca_file", ca)] {
            self.extra
                .push(format!("query.tls.{field}={}", path.display()));
        }
        self.tls_ca = Some(ca.to_owned());
        self
    }

    /// With [`DaemonBuilder::tls`]: clients must present a certificate `ca` signed
    /// (readiness is then checked presenting `cert` and `key`).
    pub fn client_certificates(mut self, ca: &Path, cert: &Path, key: &Path) -> Self {
        self.extra
            .push(format!("query.tls.client_ca_file={}", ca.display()));
        self.tls_identity = Some((cert.to_owned(), key.to_owned()));
        self
    }

    pub fn start(self) -> Daemon {
        let http = free_port();
        let resp = free_port();
        let app = &self.app;
        let log_path = app
            .state_root
            .join(format!("{}-{}.log", self.instance, unique("run")));
        let log = std::fs::File::create(&log_path).expect("daemon log file");
        let mut command = Command::new(BIN);
        command.current_dir(&app.state_root).arg("run");
        match &self.config_file {
            Some(path) => command.arg("--config").arg(path),
            None => command.arg("--bootstrap-servers").arg(bootstrap()),
        };
        command
            .arg("--application-id")
            .arg(&app.id)
            .arg("--instance-id")
            .arg(&self.instance)
            .arg("--state-dir")
            .arg(app.state_dir(&self.instance))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http}"))
            .arg("--resp-addr")
            .arg(format!("127.0.0.1:{resp}"));
        for set in [
            format!("topics.input={}", app.input),
            format!("topics.output={}", app.output),
            format!("topics.dlq={}", app.dlq),
            format!("topics.windows={}", app.windows),
            format!("topics.partitions={}", app.partitions),
            "kafka.session_timeout_ms=6000".to_owned(),
            "log.filter=info".to_owned(),
        ]
        .into_iter()
        .chain(self.extra.iter().cloned())
        {
            command.arg("--set").arg(set);
        }
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        command
            .env_remove("RUST_LOG")
            .env_remove("HELLO_STREAMS__KAFKA__BOOTSTRAP_SERVERS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let child = command.spawn().expect("spawn hello-streams");
        Daemon {
            child: Some(child),
            http_port: http,
            resp_port: resp,
            log_path,
            tls_ca: self.tls_ca,
            tls_identity: self.tls_identity,
        }
    }
}

/// A running daemon process, killed (by its pid) when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub http_port: u16,
    pub resp_port: u16,
    pub log_path: PathBuf,
    /// `Some`: the query ports speak TLS with a certificate this CA signed.
    pub tls_ca: Option<PathBuf>,
    /// `Some`: the certificate and key to present to it.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200: all owned partitions restored.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("daemon exited early ({status}); log:\n{}", self.log());
            }
            let ready = match &self.tls_ca {
                None => http_get(self.http_port, "/readyz"),
                Some(ca) => {
                    let identity = self
                        .tls_identity
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path()));
                    https_get_as(self.http_port, "/readyz", ca, identity, None)
                }
            };
            if ready.map(|(s, _)| s == 200).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("daemon not ready within {timeout:?}; log:\n{}", self.log());
    }

    /// SIGKILL: no final commit, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_ref().expect("daemon is running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        self.wait_exit(timeout)
    }

    /// Waits (bounded) for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon still running after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    /// Resident set size now, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("daemon /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = http_get(self.http_port, "/metrics").expect("metrics");
        metric_sum(&body, name).unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A metric from a Prometheus scrape, summed over its labelled series (a thread-level
/// counter has one per stream thread); `None` if the scrape has no sample of it.
pub fn metric_sum(scrape: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = scrape
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            rest.rsplit(' ').next()?.trim().parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A plain HTTP GET against 127.0.0.1:port; returns status and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    // A server that is stopping may close a connection it accepted without answering: for
    // the client that is a failed request (retry it), not a response.
    if response.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed without a response",
        ));
    }
    Ok(split_response(&response))
}

/// A GET with an optional bearer token: (status, head, body).
pub fn http_get_with(port: u16, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("http connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no response: {response:?}"));
    (
        split_response(&response).0,
        head.to_owned(),
        body.to_owned(),
    )
}

/// A TLS connection to 127.0.0.1:port that trusts only the CA in `ca` (PEM).
pub fn tls_connect(
    port: u16,
    ca: &Path,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    tls_connect_as(port, ca, None)
}

/// [`tls_connect`], presenting the client certificate and key of `identity` (PEM) if any.
pub fn tls_connect_as(
    port: u16,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| invalid(&e))? {
        roots
            .add(cert.map_err(|e| invalid(&e))?)
            .map_err(|e| invalid(&e))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| invalid(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(&e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(&e))?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(&e))?
        }
    };
    let name = ServerName::try_from("127.0.0.1").map_err(|e| invalid(&e))?;
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| invalid(&e))?;
    let socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(rustls::StreamOwned::new(connection, socket))
}

/// An HTTPS GET against 127.0.0.1:port, trusting the CA in `ca` (PEM); status and body.
pub fn https_get(
    port: u16,
    path: &str,
    ca: &Path,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    https_get_as(port, path, ca, None, token)
}

/// [`https_get`], presenting a client certificate (see [`tls_connect_as`]).
pub fn https_get_as(
    port: u16,
    path: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tls_connect_as(port, ca, identity)?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    // The server closes without a TLS close_notify only when it cuts a connection; a
    // whole response is all there either way.
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(split_response(&String::from_utf8_lossy(&response)))
}

/// Status and body of a whole HTTP/1.1 response.
pub fn split_response(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The real `redis-cli` against a RESP port; its trimmed stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    assert!(
        output.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

// ---- producing ----

pub fn producer() -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        // The Java client's partitioner, as kafka-console-producer uses.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("test producer")
}

/// Queues one record (key and value may be absent), waiting while the local queue is full.
pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => panic!("produce to {topic}: {e}"),
        }
    }
}

/// A raw record: key and value, either of which may be absent.
pub type RawRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Produces records in order (key may be absent) and waits until all are acknowledged.
pub fn produce(topic: &str, records: &[RawRecord]) {
    let producer = producer();
    for (key, value) in records {
        send(&producer, topic, key.as_deref(), value.as_deref());
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flush test producer");
}

/// Produces `(key, value, timestamp ms)` in order and waits until all are acknowledged.
pub fn produce_at<K: AsRef<str>, V: AsRef<str>>(topic: &str, records: &[(K, V, i64)]) {
    let producer = producer();
    for (key, value, timestamp) in records {
        let record = BaseRecord::to(topic)
            .key(key.as_ref().as_bytes())
            .payload(value.as_ref().as_bytes())
            .timestamp(*timestamp);
        producer
            .send(record)
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("flush test producer");
}

pub fn produce_events(topic: &str, events: &[(String, String)]) {
    let records: Vec<_> = events
        .iter()
        .map(|(k, v)| (Some(k.as_bytes().to_vec()), Some(v.as_bytes().to_vec())))
        .collect();
    produce(topic, &records);
}

/// Feeds `key:value` lines through the real `kafka-console-producer`.
pub fn console_produce(topic: &str, events: &[(String, String)]) {
    let tool = repo_root().join("bin/kafka-console-producer");
    assert!(tool.exists(), "{} is missing", tool.display());
    let mut child = Command::new(&tool)
        .args(["--bootstrap-server", &bootstrap(), "--topic", topic])
        .args([
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ])
        // Same partitioner semantics as the Java default; acks=all so nothing is lost.
        .args(["--producer-property", "acks=all"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kafka-console-producer");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for (key, value) in events {
            writeln!(stdin, "{key}:{value}").expect("write to kafka-console-producer");
        }
    }
    let output = child.wait_with_output().expect("kafka-console-producer");
    assert!(
        output.status.success(),
        "kafka-console-producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---- reading ----

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Reads a whole topic from the beginning to its current end with the given isolation level.
pub fn read_topic(topic: &str, isolation: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut assignment = TopicPartitionList::new();
    let mut pending = std::collections::HashSet::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
        pending.insert(p);
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        let value = header
                            .value
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default();
                        headers.insert(header.key.to_owned(), value);
                    }
                }
                pending.insert(m.partition());
                records.push(Record {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
    }
    records
}

/// Waits until the topic holds `expected` committed records (no more), then returns them.
pub fn await_committed(topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_topic(topic, "read_committed");
        if records.len() >= expected || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---- the independent model ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expected {
    pub count: u64,
    pub total: u64,
    pub angry: bool,
}

/// What the output says about one applied event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub outcome: String,
    pub count: u64,
    pub total: u64,
}

/// Applies the events in order and returns each key's final state and the steps the output
/// must show for it. Written apart from the crate's fold on purpose.
pub fn model(
    events: &[(String, String)],
) -> (HashMap<String, Expected>, HashMap<String, Vec<Step>>) {
    let mut state: HashMap<String, Expected> = HashMap::new();
    let mut steps: HashMap<String, Vec<Step>> = HashMap::new();
    for (key, value) in events {
        let s = state.entry(key.clone()).or_default();
        let outcome = if value.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(value).expect("workload JSON");
            match v["type"].as_str() {
                Some("mood") => {
                    s.angry = v["mood"] == "ANGRY";
                    "mood"
                }
                Some("reset") => {
                    s.count = 0;
                    "reset"
                }
                Some("hello") => hello(s, v["message"].as_str().unwrap_or_default()),
                other => panic!("workload has no {other:?} events"),
            }
        } else {
            hello(s, value)
        };
        steps.entry(key.clone()).or_default().push(Step {
            outcome: outcome.to_owned(),
            count: s.count,
            total: s.total,
        });
    }
    (state, steps)
}

fn hello(s: &mut Expected, message: &str) -> &'static str {
    if s.angry {
        "refused"
    } else if message == "Hello" {
        s.count += 1;
        s.total += 1;
        "counted"
    } else {
        "ignored"
    }
}

/// A deterministic mix of hellos, other greetings, mood changes and resets over `keys` keys.
pub fn workload(events: usize, keys: usize, seed: u64) -> Vec<(String, String)> {
    let mut x = seed.max(1);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..events)
        .map(|_| {
            let key = format!("user-{}", next() % keys as u64);
            let value = match next() % 100 {
                0..=79 => "Hello".to_owned(),
                80..=84 => "Howdy".to_owned(),
                85..=89 => r#"{"type":"mood","mood":"ANGRY"}"#.to_owned(),
                90..=96 => r#"{"type":"mood","mood":"HAPPY"}"#.to_owned(),
                _ => r#"{"type":"reset"}"#.to_owned(),
            };
            (key, value)
        })
        .collect()
}

/// What [`verify_with`] accepts in the output besides one record per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Exactly once: a second output record for an input offset fails.
    Forbidden,
    /// At least once: further output records for an input offset are allowed if they say
    /// exactly what the first one said (key, outcome, counts); they are counted.
    AllowedIfEqual,
}

/// The exact checks: one output record per event, in order per key, no duplicates; each
/// key's steps and final state as the model says; the changelog's last value per key too.
pub fn verify(app: &App, events: &[(String, String)], timeout: Duration) -> usize {
    verify_with(app, events, timeout, Duplicates::Forbidden).0
}

/// [`verify`], with duplicates allowed or not; returns (distinct output records, duplicates).
pub fn verify_with(
    app: &App,
    events: &[(String, String)],
    timeout: Duration,
    duplicates: Duplicates,
) -> (usize, usize) {
    let (expected_state, expected_steps) = model(events);
    let deadline = Instant::now() + timeout;
    let (distinct, dupes) = loop {
        let output = read_topic(&app.output, "read_committed");
        let mut first: HashMap<(i64, i64), serde_json::Value> = HashMap::new();
        let mut distinct = Vec::new();
        let mut dupes = 0usize;
        for record in &output {
            let v: serde_json::Value =
                serde_json::from_slice(record.value.as_deref().unwrap_or_default())
                    .expect("output JSON");
            let source = (
                v["sourcePartition"].as_i64().unwrap(),
                v["sourceOffset"].as_i64().unwrap(),
            );
            assert_eq!(
                record.partition as i64, source.0,
                "output partition p comes from input partition p"
            );
            match first.get(&source) {
                None => {
                    first.insert(source, v.clone());
                    distinct.push(v);
                }
                Some(original) => {
                    assert_eq!(
                        duplicates,
                        Duplicates::AllowedIfEqual,
                        "duplicate output for input {source:?}: {v}"
                    );
                    let said = |v: &serde_json::Value| {
                        ["key", "outcome", "helloCount", "helloTotalCount", "mood"]
                            .map(|f| v[f].clone())
                    };
                    assert_eq!(
                        said(&v),
                        said(original),
                        "a duplicate output for input {source:?} differs from the first"
                    );
                    dupes += 1;
                }
            }
        }
        if distinct.len() >= events.len() || Instant::now() > deadline {
            break (distinct, dupes);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut steps: HashMap<String, Vec<Step>> = HashMap::new();
    for v in &distinct {
        steps
            .entry(v["key"].as_str().unwrap().to_owned())
            .or_default()
            .push(Step {
                outcome: v["outcome"].as_str().unwrap().to_owned(),
                count: v["helloCount"].as_u64().unwrap(),
                total: v["helloTotalCount"].as_u64().unwrap(),
            });
    }
    assert_eq!(
        distinct.len(),
        events.len(),
        "one committed output record per input event ({dupes} duplicates besides)"
    );
    let mut wrong: Vec<&String> = expected_steps
        .iter()
        .filter(|(key, want)| steps.get(*key) != Some(*want))
        .map(|(key, _)| key)
        .collect();
    wrong.sort();
    if let Some(key) = wrong.first() {
        assert_eq!(
            steps.get(*key),
            expected_steps.get(*key),
            "output steps of {key} ({} of {} keys have wrong output steps)",
            wrong.len(),
            expected_steps.len()
        );
    }
    let mut last: HashMap<String, hello_streams::hello::domain::HelloState> = HashMap::new();
    for record in read_topic(&app.changelog(), "read_committed") {
        let (Some(key), Some(value)) = (record.key, record.value) else {
            continue;
        };
        if key.is_empty() {
            continue; // punctuation epoch
        }
        let state = hello_streams::hello::codec::decode_state(&value).expect("changelog value");
        last.insert(String::from_utf8(key).unwrap(), state);
    }
    for (key, want) in &expected_state {
        let got = last
            .get(key)
            .unwrap_or_else(|| panic!("changelog has no {key}"));
        assert_eq!(
            (
                got.hello_count,
                got.hello_total_count,
                got.mood == hello_streams::hello::domain::Mood::Angry
            ),
            (want.count, want.total, want.angry),
            "changelog state of {key}"
        );
    }
    assert_eq!(last.len(), expected_state.len(), "changelog keys");
    (distinct.len(), dupes)
}

/// Asks the daemon's HTTP API for every key and compares with the model. An instance that
/// is still rejoining after a fault answers 503 (restoring, owner unavailable) for a while:
/// those reads are retried for up to a minute in all.
pub fn verify_queries(port: u16, events: &[(String, String)]) {
    let (expected, _) = model(events);
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, want) in expected {
        let path = format!("/v1/state/{key}");
        let (status, body) = loop {
            let (status, body) = http_get(port, &path).expect("query");
            if status != 503 || Instant::now() > deadline {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(status, 200, "GET /v1/state/{key}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["helloCount"].as_u64(), Some(want.count), "{key}: {body}");
        assert_eq!(
            v["helloTotalCount"].as_u64(),
            Some(want.total),
            "{key}: {body}"
        );
        assert_eq!(
            v["mood"].as_str(),
            Some(if want.angry { "ANGRY" } else { "HAPPY" }),
            "{key}: {body}"
        );
    }
}

/// Runs `hello-streams drill` on an instance's state directory; asserts exit 0 and
/// "0 mismatches"; returns stdout. Callers bound it: a fault case's watchdog ends it with
/// the case.
pub fn drill(app: &App, instance: &str, extra: &[&str]) -> String {
    let output = std::process::Command::new(BIN)
        .current_dir(&app.state_root)
        .arg("drill")
        .args([
            "--bootstrap-servers",
            &bootstrap(),
            "--application-id",
            &app.id,
        ])
        .arg("--state-dir")
        .arg(app.state_dir(instance))
        .args(["--set", &format!("topics.input={}", app.input)])
        .args(["--set", &format!("topics.output={}", app.output)])
        .args(["--set", &format!("topics.dlq={}", app.dlq)])
        .args(["--set", &format!("topics.windows={}", app.windows)])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run drill");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "drill {extra:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(", 0 mismatches"),
        "drill {extra:?}:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Without terminal colour codes (the daemon's tracing output has them).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---- windows ----

/// The window settings every test daemon runs with (the defaults of `[windows]`).
pub const WINDOW_SIZE_MS: i64 = 60_000;
pub const WINDOW_GRACE_MS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowExpected {
    pub hellos: u64,
    pub events: u64,
}

/// Windows per (key, window start), and the number of late records, from the committed
/// output: per input partition in offset order, stream time is the largest event timestamp
/// seen, and an event whose window ended `grace_ms` or more before it is late. Written apart
/// from the crate's window code on purpose; the output it reads is checked against the
/// event model by [`verify`] first.
pub fn window_model(
    output: &[serde_json::Value],
    size_ms: i64,
    grace_ms: i64,
) -> (BTreeMap<(String, i64), WindowExpected>, usize) {
    let mut by_source: Vec<&serde_json::Value> = output.iter().collect();
    by_source.sort_by_key(|v| {
        (
            v["sourcePartition"].as_i64().unwrap(),
            v["sourceOffset"].as_i64().unwrap(),
        )
    });
    let mut stream_time: HashMap<i64, i64> = HashMap::new();
    let mut windows: BTreeMap<(String, i64), WindowExpected> = BTreeMap::new();
    let mut late = 0;
    for v in by_source {
        let partition = v["sourcePartition"].as_i64().unwrap();
        let timestamp = v["eventTimestamp"].as_i64().unwrap();
        let time = stream_time.entry(partition).or_insert(i64::MIN);
        *time = (*time).max(timestamp);
        let start = timestamp - timestamp.rem_euclid(size_ms);
        if start + size_ms <= *time - grace_ms {
            late += 1;
            continue;
        }
        let window = windows
            .entry((v["key"].as_str().unwrap().to_owned(), start))
            .or_default();
        window.events += 1;
        if v["outcome"] == "counted" {
            window.hellos += 1;
        }
    }
    (windows, late)
}

/// The committed output, one record per input offset (the first, if repeated).
pub fn distinct_output(app: &App) -> Vec<serde_json::Value> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for record in read_topic(&app.output, "read_committed") {
        let v: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap_or_default()).expect("output");
        if seen.insert((v["sourcePartition"].as_i64(), v["sourceOffset"].as_i64())) {
            out.push(v);
        }
    }
    out
}

/// The exact window checks, after [`verify`] passed: the window model from the committed
/// output against (1) `hello-windows`, where each window's updates count its events 1, 2, 3...
/// with none missing or repeated and the last equals the model; (2) the window changelog's
/// last value per window; (3) `GET /v1/windows/{key}` for every key; (4) the late records in
/// the dead-letter topic. Returns the number of windows checked.
pub fn verify_windows(app: &App, port: u16) -> usize {
    let (model, late) = window_model(&distinct_output(app), WINDOW_SIZE_MS, WINDOW_GRACE_MS);
    let mut updates: BTreeMap<(String, i64), Vec<(u64, u64)>> = BTreeMap::new();
    for record in read_topic(&app.windows, "read_committed") {
        let v: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap_or_default()).expect("window");
        let key = (
            v["key"].as_str().unwrap().to_owned(),
            v["windowStart"].as_i64().unwrap(),
        );
        assert_eq!(
            v["windowEnd"].as_i64(),
            Some(key.1 + WINDOW_SIZE_MS),
            "window end: {v}"
        );
        updates
            .entry(key)
            .or_default()
            .push((v["hellos"].as_u64().unwrap(), v["events"].as_u64().unwrap()));
    }
    for (window, want) in &model {
        let got = updates
            .get(window)
            .unwrap_or_else(|| panic!("no update of window {window:?} on {}", app.windows));
        let events: Vec<u64> = got.iter().map(|(_, e)| *e).collect();
        let counting: Vec<u64> = (1..=want.events).collect();
        assert_eq!(
            events, counting,
            "updates of window {window:?}: each event once, in order"
        );
        let (hellos, events) = *got.last().unwrap();
        assert_eq!(
            WindowExpected { hellos, events },
            *want,
            "last update of window {window:?}"
        );
    }
    assert_eq!(updates.len(), model.len(), "windows on {}", app.windows);

    let mut last: BTreeMap<(String, i64), Option<hello_streams::hello::windows::WindowCounts>> =
        BTreeMap::new();
    for record in read_topic(&app.windows_changelog(), "read_committed") {
        let key = record.key.unwrap_or_default();
        let Some((entity, start)) = hello_streams::hello::windows::split_window_key(&key) else {
            continue; // the stream clock
        };
        let value = record.value.map(|v| {
            hello_streams::hello::windows::decode_counts(&v).expect("window changelog value")
        });
        last.insert((String::from_utf8(entity.to_vec()).unwrap(), start), value);
    }
    for (window, want) in &model {
        let got = last
            .get(window)
            .copied()
            .flatten()
            .unwrap_or_else(|| panic!("window changelog has no {window:?}"));
        assert_eq!(
            (got.hellos, got.events),
            (want.hellos, want.events),
            "window changelog value of {window:?}"
        );
    }

    let mut per_key: BTreeMap<&str, Vec<(i64, WindowExpected)>> = BTreeMap::new();
    for ((key, start), want) in &model {
        per_key.entry(key).or_default().push((*start, *want));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (key, want) in &per_key {
        let path = format!("/v1/windows/{key}?from={}&to={}", i64::MIN, i64::MAX);
        let (status, body) = loop {
            let (status, body) = http_get(port, &path).expect("window query");
            if status != 503 || Instant::now() > deadline {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(status, 200, "GET {path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let got: Vec<(i64, WindowExpected)> = v["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["start"].as_i64().unwrap(),
                    WindowExpected {
                        hellos: w["hellos"].as_u64().unwrap(),
                        events: w["events"].as_u64().unwrap(),
                    },
                )
            })
            .collect();
        assert_eq!(&got, want, "GET {path}");
    }

    let late_letters = read_topic(&app.dlq, "read_committed")
        .iter()
        .filter(|r| r.headers.get("error.kind").map(String::as_str) == Some("late"))
        .count();
    assert_eq!(late_letters, late, "late records in {}", app.dlq);
    model.len()
}
