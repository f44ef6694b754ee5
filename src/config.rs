//! Configuration: `config/default.toml` (or `--config`), then environment, then flags, merged
//! as TOML and validated into the typed [`Config`] the rest of the program sees.
//!
//! Every error names the field and says how to fix it, in one line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hello::windows::{Emit, WindowSpec};
use crate::kafka::security::{self, RawSecurity, Security};
use crate::query::auth::{HttpAuth, RespAuth, Secret, DEFAULT_USER};
use crate::query::settings::{Forwarding, Limits};
use crate::query::tls::{Tls, TlsSettings};

/// Prefix of environment overrides: `HELLO_STREAMS__KAFKA__BOOTSTRAP_SERVERS=...`.
pub const ENV_PREFIX: &str = "HELLO_STREAMS__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML at line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("config field `{field}`: {problem}; fix: {fix}")]
    Field {
        field: String,
        problem: String,
        fix: String,
    },
    #[error("override `{text}` from {origin}: {problem}")]
    Override {
        text: String,
        origin: &'static str,
        problem: String,
    },
}

fn field_error(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    ExactlyOnce,
    AtLeastOnce,
}

impl Guarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::ExactlyOnce => "exactly_once",
            Guarantee::AtLeastOnce => "at_least_once",
        }
    }
}

// ---- the file's shape: every field optional, unknown fields rejected ----

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub app: RawApp,
    pub topics: RawTopics,
    pub kafka: RawKafka,
    pub query: RawQuery,
    pub windows: RawWindows,
    pub log: RawLog,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWindows {
    pub enabled: bool,
    pub size_ms: u64,
    pub grace_ms: u64,
    pub retention_ms: u64,
    pub emit: Emit,
}

impl Default for RawWindows {
    fn default() -> Self {
        RawWindows {
            enabled: true,
            size_ms: 60_000,
            grace_ms: 10_000,
            retention_ms: 86_400_000,
            emit: Emit::Update,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApp {
    pub application_id: String,
    pub instance_id: String,
    pub state_dir: PathBuf,
    pub processing_guarantee: Guarantee,
    pub commit_interval_ms: u64,
    pub commit_when_idle: bool,
    pub stream_threads: u64,
    pub reset_interval_ms: u64,
    pub max_value_bytes: u64,
    pub dlq_max_value_bytes: u64,
    pub max_concurrent_restores: u64,
    pub stall_timeout_ms: u64,
}

impl Default for RawApp {
    fn default() -> Self {
        RawApp {
            application_id: "hello-streams".into(),
            instance_id: String::new(),
            state_dir: PathBuf::from("state"),
            processing_guarantee: Guarantee::ExactlyOnce,
            commit_interval_ms: 100,
            commit_when_idle: true,
            stream_threads: 1,
            reset_interval_ms: 0,
            max_value_bytes: 65536,
            dlq_max_value_bytes: 16384,
            max_concurrent_restores: 2,
            stall_timeout_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTopics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub windows: String,
    pub partitions: i64,
    pub replication_factor: i64,
    /// 0: derived from the replication factor (a majority of the replicas).
    pub min_insync_replicas: i64,
    pub create: bool,
}

impl Default for RawTopics {
    fn default() -> Self {
        RawTopics {
            input: "hello-events".into(),
            output: "hello-counts".into(),
            dlq: "hello-events-dlq".into(),
            windows: "hello-windows".into(),
            partitions: 6,
            replication_factor: 1,
            min_insync_replicas: 0,
            create: true,
        }
    }
}

/// A librdkafka option value; TOML may spell numbers and booleans without quotes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PassValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Flag(bool),
}

impl PassValue {
    fn render(&self) -> String {
        match self {
            PassValue::Text(s) => s.clone(),
            PassValue::Integer(i) => i.to_string(),
            PassValue::Float(f) => f.to_string(),
            PassValue::Flag(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKafka {
    pub bootstrap_servers: String,
    pub transaction_timeout_ms: u64,
    pub session_timeout_ms: u64,
    pub start_timeout_ms: u64,
    pub security: RawSecurity,
    pub consumer: BTreeMap<String, PassValue>,
    pub producer: BTreeMap<String, PassValue>,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            bootstrap_servers: "127.0.0.1:9092".into(),
            transaction_timeout_ms: 10_000,
            session_timeout_ms: 10_000,
            start_timeout_ms: 60_000,
            security: RawSecurity::default(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuery {
    pub http_addr: String,
    pub resp_addr: String,
    pub advertised_http_addr: String,
    pub advertised_resp_addr: String,
    pub resp_max_connections: u64,
    pub cache_max_entries: u64,
    // Limits, forwarding and who may read (issue 16); see config/default.toml.
    pub http_max_connections: u64,
    pub http_header_timeout_ms: u64,
    pub http_request_timeout_ms: u64,
    pub http_max_request_bytes: u64,
    pub shutdown_timeout_ms: u64,
    pub resp_idle_timeout_ms: u64,
    pub resp_output_buffer_bytes: u64,
    pub resp_output_timeout_ms: u64,
    pub resp_max_request_bytes: u64,
    pub max_wait_ms: u64,
    pub forward: bool,
    pub forward_timeout_ms: u64,
    pub forward_pool_size: u64,
    pub forward_user: String,
    pub resp_password: Secret,
    pub resp_users: BTreeMap<String, Secret>,
    pub http_token: Secret,
    pub metrics_need_token: bool,
    pub tls: RawTls,
}

/// `[query.tls]`: PEM files; TLS is on when `cert_file` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    pub client_ca_file: PathBuf,
    pub handshake_timeout_ms: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            handshake_timeout_ms: 10_000,
        }
    }
}

impl Default for RawQuery {
    fn default() -> Self {
        RawQuery {
            http_addr: "127.0.0.1:8080".into(),
            resp_addr: "127.0.0.1:6380".into(),
            advertised_http_addr: String::new(),
            advertised_resp_addr: String::new(),
            resp_max_connections: 10_000,
            cache_max_entries: 100_000,
            http_max_connections: 4096,
            http_header_timeout_ms: 10_000,
            http_request_timeout_ms: 10_000,
            http_max_request_bytes: 16 * 1024,
            shutdown_timeout_ms: 5_000,
            resp_idle_timeout_ms: 300_000,
            resp_output_buffer_bytes: 1024 * 1024,
            resp_output_timeout_ms: 10_000,
            resp_max_request_bytes: 1024 * 1024,
            max_wait_ms: 5_000,
            forward: true,
            forward_timeout_ms: 2_000,
            forward_pool_size: 4,
            forward_user: String::new(),
            resp_password: Secret::default(),
            resp_users: BTreeMap::new(),
            http_token: Secret::default(),
            metrics_need_token: false,
            tls: RawTls::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub filter: String,
    pub format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `text` for people (colour only on a terminal), `json` (one object a line) for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

// ---- the validated configuration ----

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub application_id: String,
    /// `None`: generated once and kept in the state directory.
    pub instance_id: Option<String>,
    pub state_dir: PathBuf,
    pub guarantee: Guarantee,
    pub commit_interval: Duration,
    /// Commit as soon as the thread has caught up with its input, not only every
    /// `commit_interval`: under exactly-once nothing is visible before the commit.
    pub commit_when_idle: bool,
    /// Stream threads of this instance, each its own group member with its own
    /// transactional producer (Kafka Streams' `num.stream.threads`).
    pub stream_threads: usize,
    pub reset_interval: Option<Duration>,
    pub max_value_bytes: usize,
    pub dlq_max_value_bytes: usize,
    /// Restores a stream thread runs at once; the other assigned partitions wait their turn
    /// while the active ones keep processing.
    pub max_concurrent_restores: usize,
    /// A stream thread with input or an open transaction that commits nothing for this long
    /// is reported stalled (log, metric, not ready).
    pub stall_timeout: Duration,
    pub topics: Topics,
    /// `None`: `[windows] enabled = false`.
    pub windows: Option<WindowSpec>,
    pub kafka: Kafka,
    pub query: Query,
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Where the file part of this configuration came from; logged at start.
    pub file: ConfigFile,
}

/// The configuration file that was read, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// Named with `--config`.
    Given(PathBuf),
    /// `config/default.toml`, found in the current directory without `--config`.
    Found(PathBuf),
    /// No file: built-in defaults, then environment and flags.
    None,
}

impl std::fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigFile::Given(path) => write!(f, "{}", path.display()),
            ConfigFile::Found(path) => write!(
                f,
                "{} (found in the current directory; --config names another)",
                path.display()
            ),
            ConfigFile::None => f.write_str("none (built-in defaults)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    /// `<application_id>-hello-store-changelog`.
    pub changelog: String,
    /// Window updates (`[windows] emit`).
    pub windows: String,
    /// `<application_id>-hello-windows-changelog`.
    pub windows_changelog: String,
    /// `<application_id>-owners`: where instances announce the partitions they serve.
    pub owners: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics created at start.
    pub min_insync_replicas: i32,
    pub create: bool,
}

#[derive(Clone, PartialEq)]
pub struct Kafka {
    pub bootstrap_servers: String,
    pub transaction_timeout: Duration,
    pub session_timeout: Duration,
    /// How long the start waits for the cluster to answer before it gives up.
    pub start_timeout: Duration,
    pub security: Security,
    pub consumer: BTreeMap<String, String>,
    pub producer: BTreeMap<String, String>,
}

/// Raw options may hold secrets (`ssl.keystore.password`, ...): `check-config` prints them
/// redacted.
impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |options: &BTreeMap<String, String>| {
            options
                .iter()
                .map(|(key, value)| {
                    let shown = if security::is_secret_option(key) {
                        "<redacted>".to_owned()
                    } else {
                        value.clone()
                    };
                    (key.clone(), shown)
                })
                .collect::<BTreeMap<_, _>>()
        };
        f.debug_struct("Kafka")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("transaction_timeout", &self.transaction_timeout)
            .field("session_timeout", &self.session_timeout)
            .field("start_timeout", &self.start_timeout)
            .field("security", &self.security)
            .field("consumer", &redacted(&self.consumer))
            .field("producer", &redacted(&self.producer))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub http_addr: SocketAddr,
    pub resp_addr: SocketAddr,
    /// Empty: derived from the bound address at start.
    pub advertised_http_addr: String,
    pub advertised_resp_addr: String,
    pub resp_max_connections: usize,
    /// States the query path keeps in memory across all stores of the process; 0: none.
    pub cache_max_entries: usize,
    pub limits: Limits,
    pub forwarding: Forwarding,
    pub resp_auth: RespAuth,
    pub http_auth: HttpAuth,
    /// `None`: both servers speak plain TCP.
    pub tls: Option<TlsSettings>,
}

/// Where the configuration comes from, in increasing precedence after the file.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `None`: `config/default.toml` when it exists, else built-in defaults.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; only `HELLO_STREAMS__*` are read).
    pub env: Vec<(String, String)>,
    /// `section.field=value` pairs from flags.
    pub overrides: Vec<String>,
}

pub const DEFAULT_FILE: &str = "config/default.toml";

/// Loads, merges and validates the configuration.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let (mut table, file) = match &sources.file {
        Some(path) => (read_file(path)?, ConfigFile::Given(path.clone())),
        None if Path::new(DEFAULT_FILE).exists() => (
            read_file(Path::new(DEFAULT_FILE))?,
            ConfigFile::Found(PathBuf::from(DEFAULT_FILE)),
        ),
        None => (toml::Table::new(), ConfigFile::None),
    };
    for (name, value) in &sources.env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path = rest.to_ascii_lowercase().replace("__", ".");
        apply_override(&mut table, &path, value).map_err(|problem| ConfigError::Override {
            text: format!("{name}={value}"),
            origin: "the environment",
            problem,
        })?;
    }
    for text in &sources.overrides {
        let Some((path, value)) = text.split_once('=') else {
            return Err(ConfigError::Override {
                text: text.clone(),
                origin: "--set",
                problem: "expected section.field=value".into(),
            });
        };
        apply_override(&mut table, path.trim(), value).map_err(|problem| {
            ConfigError::Override {
                text: text.clone(),
                origin: "--set",
                problem,
            }
        })?;
    }
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner().to_string();
            let fix = if inner.contains("unknown field") {
                "remove it or correct its spelling (see config/default.toml)".to_owned()
            } else {
                "see config/default.toml for the expected type".to_owned()
            };
            field_error(&field, inner.trim().replace('\n', " "), fix)
        })?;
    let mut config = validate(raw, &sources.env)?;
    config.file = file;
    Ok(config)
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => line_and_column(&text, span.start),
            None => (0, 0),
        };
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().replace('\n', " "),
        }
    })
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Sets `a.b.c` in the table. Values parse as TOML when they can (numbers, booleans) and are
/// strings otherwise. Under `kafka.consumer` / `kafka.producer` the rest of the path is one
/// librdkafka option name, dots included.
fn apply_override(table: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{path}` is not a section.field path"));
    }
    let (sections, last) = match parts.as_slice() {
        ["kafka", map @ ("consumer" | "producer"), option @ ..] if !option.is_empty() => {
            (vec!["kafka", *map], option.join("."))
        }
        [sections @ .., last] => (sections.to_vec(), (*last).to_owned()),
        [] => return Err("empty path".into()),
    };
    let mut current = table;
    for section in sections {
        let entry = current
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{section}` is not a section")),
        };
    }
    current.insert(last, parse_value(value));
    Ok(())
}

fn parse_value(text: &str) -> toml::Value {
    let wrapped = format!("v = {text}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

fn validate(raw: RawConfig, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let app = raw.app;
    check_name("app.application_id", &app.application_id)?;
    let instance_id = if app.instance_id.is_empty() {
        None
    } else {
        check_name("app.instance_id", &app.instance_id)?;
        Some(app.instance_id)
    };
    if app.state_dir.as_os_str().is_empty() {
        return Err(field_error(
            "app.state_dir",
            "is empty",
            "set a directory for the local state stores",
        ));
    }
    let commit_interval_ms = in_range("app.commit_interval_ms", app.commit_interval_ms, 1, 60_000)?;
    // Bounded by the readiness bitmask in LocalState; more threads than partitions idle.
    let stream_threads = in_range("app.stream_threads", app.stream_threads, 1, 64)?;
    let reset_interval = match app.reset_interval_ms {
        0 => None,
        ms => Some(Duration::from_millis(in_range(
            "app.reset_interval_ms",
            ms,
            100,
            u64::MAX,
        )?)),
    };
    let max_value_bytes = in_range("app.max_value_bytes", app.max_value_bytes, 1, 16 << 20)?;
    let dlq_max_value_bytes = in_range(
        "app.dlq_max_value_bytes",
        app.dlq_max_value_bytes,
        0,
        16 << 20,
    )?;

    let max_concurrent_restores = in_range(
        "app.max_concurrent_restores",
        app.max_concurrent_restores,
        1,
        256,
    )?;

    let t = raw.topics;
    for (field, name) in [
        ("topics.input", &t.input),
        ("topics.output", &t.output),
        ("topics.dlq", &t.dlq),
        ("topics.windows", &t.windows),
    ] {
        check_name(field, name)?;
    }
    let names = [&t.input, &t.output, &t.dlq, &t.windows];
    if (1..names.len()).any(|i| names[..i].contains(&names[i])) {
        return Err(field_error(
            "topics",
            "input, output, dlq and windows must be four different topics",
            "give each a distinct name",
        ));
    }
    let windows = validate_windows(&raw.windows)?;
    let partitions = in_range("topics.partitions", t.partitions, 1, 10_000)? as i32;
    let replication_factor =
        in_range("topics.replication_factor", t.replication_factor, 1, 32)? as i32;
    // A majority of the replicas (RF 3: 2, RF 2: 1): acks=all then survives the loss of a
    // minority. Forcing 2 at RF 2 stopped every write when one broker was down.
    let min_insync_replicas = match t.min_insync_replicas {
        0 => (replication_factor + 1) / 2,
        n => in_range(
            "topics.min_insync_replicas",
            n,
            1,
            i64::from(replication_factor),
        )? as i32,
    };

    let k = raw.kafka;
    if k.bootstrap_servers.trim().is_empty() {
        return Err(field_error(
            "kafka.bootstrap_servers",
            "is empty",
            "set host:port of at least one broker, e.g. 127.0.0.1:9092",
        ));
    }
    let transaction_timeout_ms = in_range(
        "kafka.transaction_timeout_ms",
        k.transaction_timeout_ms,
        1_000,
        900_000,
    )?;
    if transaction_timeout_ms <= commit_interval_ms {
        return Err(field_error(
            "kafka.transaction_timeout_ms",
            format!("{transaction_timeout_ms} is not above app.commit_interval_ms ({commit_interval_ms})"),
            "make the transaction timeout several times the commit interval",
        ));
    }
    let session_timeout_ms = in_range(
        "kafka.session_timeout_ms",
        k.session_timeout_ms,
        1_000,
        3_600_000,
    )?;
    let start_timeout_ms = in_range(
        "kafka.start_timeout_ms",
        k.start_timeout_ms,
        1_000,
        86_400_000,
    )?;
    let kafka_security = k
        .security
        .validate(env)
        .map_err(|invalid| ConfigError::Field {
            field: invalid.field.to_owned(),
            problem: invalid.problem,
            fix: invalid.fix,
        })?;
    for (map, options) in [("consumer", &k.consumer), ("producer", &k.producer)] {
        for option in options.keys() {
            if let Some(why) = reserved_option(option) {
                return Err(field_error(
                    &format!("kafka.{map}.{option}"),
                    format!("cannot be set: {why}"),
                    "remove it",
                ));
            }
        }
    }
    let render = |m: BTreeMap<String, PassValue>| {
        m.into_iter()
            .map(|(key, value)| (key, value.render()))
            .collect::<BTreeMap<_, _>>()
    };

    let q = raw.query;
    let http_addr = parse_addr("query.http_addr", &q.http_addr)?;
    let resp_addr = parse_addr("query.resp_addr", &q.resp_addr)?;
    let resp_max_connections = in_range(
        "query.resp_max_connections",
        q.resp_max_connections,
        1,
        100_000,
    )? as usize;
    let cache_max_entries = in_range(
        "query.cache_max_entries",
        q.cache_max_entries,
        0,
        100_000_000,
    )? as usize;
    let (limits, forwarding, resp_auth, http_auth) = validate_servers(&q)?;
    let tls = validate_tls(&q.tls)?;

    if tracing_subscriber::EnvFilter::try_new(&raw.log.filter).is_err() {
        return Err(field_error(
            "log.filter",
            format!("`{}` is not a tracing filter", raw.log.filter),
            "use e.g. \"info\" or \"hello_streams=debug,rdkafka=warn\"",
        ));
    }

    Ok(Config {
        topics: Topics {
            changelog: format!("{}-hello-store-changelog", app.application_id),
            windows: t.windows,
            windows_changelog: format!("{}-hello-windows-changelog", app.application_id),
            owners: format!("{}-owners", app.application_id),
            input: t.input,
            output: t.output,
            dlq: t.dlq,
            partitions,
            replication_factor,
            min_insync_replicas,
            create: t.create,
        },
        windows,
        application_id: app.application_id,
        instance_id,
        state_dir: app.state_dir,
        guarantee: app.processing_guarantee,
        commit_interval: Duration::from_millis(commit_interval_ms),
        commit_when_idle: app.commit_when_idle,
        stream_threads: stream_threads as usize,
        reset_interval,
        max_value_bytes: max_value_bytes as usize,
        dlq_max_value_bytes: dlq_max_value_bytes as usize,
        max_concurrent_restores: max_concurrent_restores as usize,
        // As long as a restore may wait for another producer's open transaction.
        stall_timeout: match app.stall_timeout_ms {
            0 => Duration::from_millis(transaction_timeout_ms) + Duration::from_secs(60),
            ms => Duration::from_millis(in_range("app.stall_timeout_ms", ms, 1_000, 3_600_000)?),
        },
        kafka: Kafka {
            bootstrap_servers: k.bootstrap_servers,
            transaction_timeout: Duration::from_millis(transaction_timeout_ms),
            session_timeout: Duration::from_millis(session_timeout_ms),
            start_timeout: Duration::from_millis(start_timeout_ms),
            security: kafka_security,
            consumer: render(k.consumer),
            producer: render(k.producer),
        },
        query: Query {
            http_addr,
            resp_addr,
            advertised_http_addr: q.advertised_http_addr,
            advertised_resp_addr: q.advertised_resp_addr,
            resp_max_connections,
            cache_max_entries,
            limits,
            forwarding,
            resp_auth,
            http_auth,
            tls,
        },
        log_filter: raw.log.filter,
        log_format: raw.log.format,
        file: ConfigFile::None,
    })
}

fn validate_windows(w: &RawWindows) -> Result<Option<WindowSpec>, ConfigError> {
    if !w.enabled {
        return Ok(None);
    }
    let size_ms = in_range("windows.size_ms", w.size_ms, 1_000, 31 * 86_400_000)? as i64;
    let grace_ms = in_range("windows.grace_ms", w.grace_ms, 0, 31 * 86_400_000)? as i64;
    let retention_ms = in_range(
        "windows.retention_ms",
        w.retention_ms,
        1_000,
        3_650 * 86_400_000,
    )? as i64;
    // As Kafka Streams requires: a window must still be kept while it accepts late records.
    if retention_ms < size_ms + grace_ms {
        return Err(field_error(
            "windows.retention_ms",
            format!(
                "{retention_ms} is below windows.size_ms + windows.grace_ms ({})",
                size_ms + grace_ms
            ),
            "keep windows at least as long as they accept records",
        ));
    }
    Ok(Some(WindowSpec {
        size_ms,
        grace_ms,
        retention_ms,
        emit: w.emit,
    }))
}

/// librdkafka options the raw passthrough may not set, with the reason: each is part of how
/// exactly-once (or at-least-once) works, or has its own field.
fn reserved_option(option: &str) -> Option<String> {
    if let Some(field) = security::owned_option(option) {
        return Some(format!(
            "use {field}, which applies to every Kafka client of the daemon"
        ));
    }
    Some(match option {
        "group.id" => "it is app.application_id (the consumer group the instances share)",
        "isolation.level" => {
            "hello-streams reads read_committed under exactly_once; read_uncommitted would fold aborted records"
        }
        "enable.auto.commit" | "enable.auto.offset.store" => {
            "input offsets are committed inside the transaction (or after the store, at least once), never automatically"
        }
        "transactional.id" => {
            "it is derived from app.application_id and app.instance_id, so a restart fences its previous incarnation"
        }
        "enable.idempotence" | "acks" => {
            "the producer must be idempotent with acks=all, or records can be lost or duplicated"
        }
        "transaction.timeout.ms" => "use kafka.transaction_timeout_ms",
        "session.timeout.ms" => "use kafka.session_timeout_ms",
        "partition.assignment.strategy" => {
            "hello-streams relies on cooperative-sticky assignment to revoke only the moved partitions"
        }
        "enable.partition.eof" => "restores and readers need end-of-partition events",
        _ => return None,
    }.to_owned())
}

/// The `[query]` fields of issue 16: server limits, forwarding, authentication.
fn validate_servers(q: &RawQuery) -> Result<(Limits, Forwarding, RespAuth, HttpAuth), ConfigError> {
    let ms = |field: &str, value: u64, min: u64, max: u64| {
        in_range(field, value, min, max).map(Duration::from_millis)
    };
    let bytes = |field: &str, value: u64, min: u64, max: u64| {
        in_range(field, value, min, max).map(|v| v as usize)
    };
    let hour = 3_600_000;
    let limits = Limits {
        http_max_connections: bytes(
            "query.http_max_connections",
            q.http_max_connections,
            1,
            100_000,
        )?,
        http_header_timeout: ms(
            "query.http_header_timeout_ms",
            q.http_header_timeout_ms,
            100,
            hour,
        )?,
        http_request_timeout: ms(
            "query.http_request_timeout_ms",
            q.http_request_timeout_ms,
            100,
            hour,
        )?,
        // hyper's read buffer cannot be smaller than 8 KiB.
        http_max_request_bytes: bytes(
            "query.http_max_request_bytes",
            q.http_max_request_bytes,
            8192,
            1 << 24,
        )?,
        shutdown_timeout: ms(
            "query.shutdown_timeout_ms",
            q.shutdown_timeout_ms,
            0,
            600_000,
        )?,
        resp_idle_timeout: match q.resp_idle_timeout_ms {
            0 => None,
            v => Some(ms("query.resp_idle_timeout_ms", v, 100, 24 * hour)?),
        },
        resp_output_buffer_bytes: bytes(
            "query.resp_output_buffer_bytes",
            q.resp_output_buffer_bytes,
            1024,
            1 << 30,
        )?,
        resp_output_timeout: ms(
            "query.resp_output_timeout_ms",
            q.resp_output_timeout_ms,
            100,
            hour,
        )?,
        resp_max_request_bytes: bytes(
            "query.resp_max_request_bytes",
            q.resp_max_request_bytes,
            1024,
            1 << 29,
        )?,
        max_wait: ms("query.max_wait_ms", q.max_wait_ms, 0, hour)?,
    };
    let forwarding = Forwarding {
        enabled: q.forward,
        timeout: ms(
            "query.forward_timeout_ms",
            q.forward_timeout_ms,
            10,
            600_000,
        )?,
        pool_size: bytes("query.forward_pool_size", q.forward_pool_size, 0, 1024)?,
        user: q.forward_user.clone(),
    };
    let resp_auth = RespAuth {
        password: q.resp_password.clone(),
        users: q.resp_users.clone(),
    };
    for (name, secret) in &resp_auth.users {
        let bad = name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic());
        if bad || name == DEFAULT_USER || !secret.is_set() {
            return Err(field_error(
                &format!("query.resp_users.{name}"),
                "a user needs a printable name other than `default` and a password",
                "set `name = \"password\"`; the default user's password is query.resp_password",
            ));
        }
    }
    if !q.forward_user.is_empty() && !resp_auth.users.contains_key(&q.forward_user) {
        return Err(field_error(
            "query.forward_user",
            format!("`{}` is not in query.resp_users", q.forward_user),
            "name one of query.resp_users, or leave it empty to forward as `default`",
        ));
    }
    let http_auth = HttpAuth {
        token: q.http_token.clone(),
        metrics_need_token: q.metrics_need_token,
    };
    Ok((limits, forwarding, resp_auth, http_auth))
}

/// `[query.tls]`: both files or neither, and every file must load now, so a bad one fails at
/// start (and in `check-config`) naming its field rather than at the first client.
fn validate_tls(t: &RawTls) -> Result<Option<TlsSettings>, ConfigError> {
    let set = |path: &PathBuf| (!path.as_os_str().is_empty()).then(|| path.clone());
    let (cert_file, key_file) = match (set(&t.cert_file), set(&t.key_file)) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if set(&t.ca_file).is_some() || set(&t.client_ca_file).is_some() {
                return Err(field_error(
                    "query.tls.cert_file",
                    "is empty while a CA file is set",
                    "set cert_file and key_file to turn TLS on, or clear the CA files",
                ));
            }
            return Ok(None);
        }
        (Some(_), None) => {
            return Err(field_error(
                "query.tls.key_file",
                "is empty while cert_file is set",
                "set the PEM private key of cert_file's certificate",
            ))
        }
        (None, Some(_)) => {
            return Err(field_error(
                "query.tls.cert_file",
                "is empty while key_file is set",
                "set the PEM certificate chain that goes with key_file",
            ))
        }
    };
    let settings = TlsSettings {
        cert_file,
        key_file,
        ca_file: set(&t.ca_file),
        client_ca_file: set(&t.client_ca_file),
        handshake_timeout: Duration::from_millis(in_range(
            "query.tls.handshake_timeout_ms",
            t.handshake_timeout_ms,
            100,
            600_000,
        )?),
    };
    if let Err(error) = Tls::load(&settings) {
        let file = error.file();
        return Err(field_error(file.field(), error.to_string(), file.fix()));
    }
    Ok(Some(settings))
}

fn in_range<T>(field: &str, value: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < min || value > max {
        return Err(field_error(
            field,
            format!("{value} is out of range"),
            format!("use a value from {min} to {max}"),
        ));
    }
    Ok(value)
}

/// Kafka topic and group names: letters, digits, `.`, `_`, `-`, at most 200 characters.
fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("`{name}` is not a valid name"),
            "use 1 to 200 characters of letters, digits, '.', '_' and '-'",
        ))
    }
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        field_error(
            field,
            format!("`{text}` is not an ip:port address"),
            "use e.g. 127.0.0.1:8080 (port 0 picks a free port)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(
        file: Option<&str>,
        env: &[(&str, &str)],
        overrides: &[&str],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file.unwrap_or("")).unwrap();
        load(&Sources {
            file: Some(path),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn shipped_default_file_matches_built_in_defaults() {
        let text = include_str!("../config/default.toml");
        let raw: RawConfig = toml::from_str(text).unwrap();
        assert_eq!(raw, RawConfig::default());
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let config = load_with(
            Some("[kafka]\nbootstrap_servers = \"file:1\"\n[app]\ncommit_interval_ms = 50\n"),
            &[
                ("HELLO_STREAMS__KAFKA__BOOTSTRAP_SERVERS", "env:2"),
                ("OTHER", "x"),
            ],
            &["app.commit_interval_ms=70", "kafka.producer.linger.ms=5"],
        )
        .unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "env:2");
        assert_eq!(config.commit_interval, Duration::from_millis(70));
        assert_eq!(
            config.kafka.producer.get("linger.ms").map(String::as_str),
            Some("5")
        );
        assert_eq!(
            config.topics.changelog,
            "hello-streams-hello-store-changelog"
        );
    }

    #[test]
    fn options_exactly_once_depends_on_cannot_be_passed_through() {
        for option in [
            "kafka.consumer.isolation.level=read_uncommitted",
            "kafka.consumer.enable.auto.commit=true",
            "kafka.consumer.group.id=other",
            "kafka.producer.transactional.id=x",
            "kafka.producer.enable.idempotence=false",
        ] {
            let error = load_with(None, &[], &[option]).unwrap_err().to_string();
            let field = option.split('=').next().unwrap();
            assert!(
                error.contains(field)
                    && error.contains("cannot be set")
                    && error.contains("fix: remove it"),
                "{error}"
            );
        }
        // Tuning stays allowed.
        load_with(None, &[], &["kafka.consumer.max.poll.interval.ms=20000"]).unwrap();
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let unknown = load_with(Some("[app]\ncommit_intervl_ms = 5\n"), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("app.commit_intervl_ms") && unknown.contains("fix:"),
            "{unknown}"
        );
        let wrong_type = load_with(Some("[topics]\npartitions = \"six\"\n"), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(wrong_type.contains("topics.partitions"), "{wrong_type}");
        let range = load_with(None, &[], &["app.commit_interval_ms=0"])
            .unwrap_err()
            .to_string();
        assert!(
            range.contains("app.commit_interval_ms") && range.contains("from 1"),
            "{range}"
        );
        let threads = load_with(None, &[], &["app.stream_threads=0"])
            .unwrap_err()
            .to_string();
        assert!(
            threads.contains("app.stream_threads") && threads.contains("from 1 to 64"),
            "{threads}"
        );
        let retention = load_with(None, &[], &["windows.retention_ms=60000"])
            .unwrap_err()
            .to_string();
        assert!(
            retention.contains("windows.retention_ms") && retention.contains("fix:"),
            "{retention}"
        );
        let emit = load_with(None, &[], &["windows.emit=sometimes"])
            .unwrap_err()
            .to_string();
        assert!(emit.contains("windows.emit"), "{emit}");
        let off = load_with(None, &[], &["windows.enabled=false"]).unwrap();
        assert_eq!(off.windows, None);
        let topics = load_with(None, &[], &["topics.windows=hello-counts"])
            .unwrap_err()
            .to_string();
        assert!(topics.contains("four different topics"), "{topics}");
        let syntax = load_with(Some("[app\n"), &[], &[]).unwrap_err().to_string();
        assert!(syntax.contains("line 1"), "{syntax}");
        let guarantee = load_with(None, &[], &["app.processing_guarantee=twice"])
            .unwrap_err()
            .to_string();
        assert!(
            guarantee.contains("app.processing_guarantee"),
            "{guarantee}"
        );
        for message in [unknown, wrong_type, range, syntax, guarantee] {
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }

    #[test]
    fn min_insync_replicas_is_a_majority_unless_set() {
        let derived = |rf: i64| {
            load_with(None, &[], &[&format!("topics.replication_factor={rf}")])
                .unwrap()
                .topics
                .min_insync_replicas
        };
        assert_eq!(
            [derived(1), derived(2), derived(3), derived(5)],
            [1, 1, 2, 3]
        );
        let set = load_with(
            None,
            &[],
            &[
                "topics.replication_factor=3",
                "topics.min_insync_replicas=3",
            ],
        )
        .unwrap();
        assert_eq!(set.topics.min_insync_replicas, 3);
        let too_many = load_with(
            None,
            &[],
            &[
                "topics.replication_factor=2",
                "topics.min_insync_replicas=3",
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            too_many.contains("topics.min_insync_replicas") && too_many.contains("from 1 to 2"),
            "{too_many}"
        );
    }

    #[test]
    fn kafka_security_is_one_section_and_its_secrets_stay_hidden() {
        let config = load_with(
            Some(
                "[kafka.security]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"app\"\nsasl_password_env = \"HS_TEST_PW\"\n",
            ),
            &[("HS_TEST_PW", "s3cret-value")],
            &["kafka.consumer.ssl.keystore.password=other-secret"],
        )
        .unwrap();
        let sasl = config.kafka.security.sasl.as_ref().unwrap();
        assert_eq!(
            (sasl.username.as_str(), sasl.password.expose()),
            ("app", "s3cret-value")
        );
        let shown = format!("{config:#?}");
        assert!(
            !shown.contains("s3cret-value") && !shown.contains("other-secret"),
            "{shown}"
        );
        // The raw passthrough would apply to one kind of client only.
        let raw = load_with(None, &[], &["kafka.producer.sasl.password=x"])
            .unwrap_err()
            .to_string();
        assert!(
            raw.contains("kafka.producer.sasl.password") && raw.contains("kafka.security."),
            "{raw}"
        );
        let missing = load_with(None, &[], &["kafka.security.security_protocol=sasl_ssl"])
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("kafka.security.sasl_mechanism") && missing.contains("fix:"),
            "{missing}"
        );
    }

    #[test]
    fn the_file_read_is_reported() {
        let config = load_with(Some(""), &[], &[]).unwrap();
        assert!(
            matches!(config.file, ConfigFile::Given(_)),
            "{:?}",
            config.file
        );
        let json = load_with(None, &[], &["log.format=json"]).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let bad = load_with(None, &[], &["log.format=xml"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("log.format"), "{bad}");
    }
}
