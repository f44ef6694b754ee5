//! Command-line interface: raw flags, turned into configuration [`Sources`] and a command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Sources;

#[derive(Debug, Parser)]
#[command(
    name = "hello-streams",
    version,
    about = "Counts hellos per key from Kafka into local RocksDB state, exactly once, and serves them over HTTP and the Redis protocol"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that override the configuration; they apply to every subcommand. Each names the
/// field it sets and the built-in default, which a configuration file may change.
#[derive(Debug, Args)]
pub struct ConfigFlags {
    /// Configuration file. Without it, config/default.toml is read when the current directory
    /// has one, else built-in defaults apply; the log and check-config name the file used
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set any configuration field, after the file and the HELLO_STREAMS__SECTION__FIELD
    /// environment variables, e.g. --set app.commit_interval_ms=50 (repeatable)
    #[arg(long = "set", global = true, value_name = "SECTION.FIELD=VALUE")]
    pub set: Vec<String>,
    /// Kafka brokers to start from, comma-separated
    /// [kafka.bootstrap_servers; default: 127.0.0.1:9092]
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub bootstrap_servers: Option<String>,
    /// Consumer group, changelog topic prefix and state sub-directory; instances with the
    /// same id share the partitions [app.application_id; default: hello-streams]
    #[arg(long, global = true, value_name = "ID")]
    pub application_id: Option<String>,
    /// Stable identity of this instance: its transactional id and ownership announcements
    /// [app.instance_id; default: generated once, kept in STATE_DIR/APPLICATION_ID/instance.id]
    #[arg(long, global = true, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Directory of the local RocksDB stores; deleting it is safe, the changelog rebuilds it
    /// [app.state_dir; default: ./state]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// exactly_once: input, changelog and output in one Kafka transaction per commit;
    /// at_least_once: output may repeat after a crash, counts stay exact
    /// [app.processing_guarantee; default: exactly_once]
    #[arg(long, global = true, value_parser = ["exactly_once", "at_least_once"])]
    pub processing_guarantee: Option<String>,
    /// Listen address of the HTTP API (/v1/state, /v1/status, /metrics, /healthz, /readyz);
    /// port 0 picks a free port [query.http_addr; default: 127.0.0.1:8080]
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub http_addr: Option<String>,
    /// Listen address of the Redis-protocol server (GET, MGET, HGETALL, ...)
    /// [query.resp_addr; default: 127.0.0.1:6380]
    #[arg(long, global = true, value_name = "IP:PORT")]
    pub resp_addr: Option<String>,
    /// Log lines as text (coloured only on a terminal) or as one JSON object a line, for log
    /// shippers [log.format; default: text]
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the stream processor and its query servers until SIGINT/SIGTERM
    Run,
    /// Validate the configuration and print the effective values
    CheckConfig,
    /// Read the local state stores directly (works on a stopped instance)
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Recovery drill: rebuild partition stores from the changelog and compare key by key
    Drill {
        /// Only these partitions (default: every store in the state directory)
        #[arg(long = "partition", value_name = "N")]
        partitions: Vec<i32>,
        /// Rebuild into this directory and leave the live store alone (safe while running);
        /// without it the store is wiped and replayed in place (stop the instance first)
        #[arg(long, value_name = "DIR")]
        scratch: Option<PathBuf>,
    },
    /// Keep every key's latest state in PostgreSQL or Redis, exactly once, or compare them
    /// with the local stores
    Projection {
        #[command(subcommand)]
        command: ProjectionCommand,
    },
    /// Ask a running instance for a key's state over HTTP
    Query {
        key: String,
        /// Base URL of any instance (default: http:// + query.http_addr)
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print one key's state as JSON
    Get { key: String },
    /// Print every key's state, one JSON object per line
    Dump,
    /// Print every window (key, start, end, hellos, events), one JSON object per line
    Windows,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Into the seed's Pekko R2DBC tables (durable_state, optionally event_journal)
    Postgres {
        /// libpq connection string or postgresql:// URL
        #[arg(
            long,
            env = "HELLO_STREAMS_POSTGRES_URL",
            default_value = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
        )]
        url: String,
        /// Apply sql/create_tables_postgres.sql first (idempotent)
        #[arg(long)]
        create_tables: bool,
        /// Also write one event_journal row per applied event (seq_nr = revision)
        #[arg(long)]
        event_journal: bool,
        /// Pekko entity type: persistence_id = <entity type>|<key>
        #[arg(long, default_value = "HelloState")]
        entity_type: String,
        #[command(flatten)]
        flags: ProjectionFlags,
    },
    /// Into a Redis hash per key (helloCount, helloTotalCount, mood, revision)
    Redis {
        /// redis:// URL
        #[arg(
            long,
            env = "HELLO_STREAMS_REDIS_URL",
            default_value = "redis://127.0.0.1:6379"
        )]
        url: String,
        /// Prepended to each key's hash name
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        flags: ProjectionFlags,
    },
    /// Compare the local stores (app.state_dir) with PostgreSQL and/or Redis key by key;
    /// exits 1 on any mismatch
    Verify {
        /// libpq connection string or postgresql:// URL
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        #[arg(long, default_value = "HelloState")]
        entity_type: String,
        /// redis:// URL
        #[arg(long, value_name = "URL")]
        redis: Option<String>,
        #[arg(long, default_value = "")]
        prefix: String,
        /// Keep comparing until everything matches or this many seconds have passed
        #[arg(long, default_value_t = 0)]
        wait_secs: u64,
    },
}

/// Consumer-side flags shared by the projections.
#[derive(Debug, Args)]
pub struct ProjectionFlags {
    /// Consumer group and projection_name (default: <application id>-projection-<target>)
    #[arg(long)]
    pub group: Option<String>,
    /// Records per partition batch (one transaction)
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_records: u64,
    /// Longest a partition's batch stays open
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub batch_interval_ms: u64,
    /// Serve Prometheus metrics (rows written, errors, lag, batch latency) here
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl ConfigFlags {
    /// The flags as configuration sources (environment included), in precedence order.
    pub fn sources(&self) -> Sources {
        let mut overrides = Vec::new();
        let mut push = |field: &str, value: Option<String>| {
            if let Some(value) = value {
                overrides.push(format!("{field}={}", quote(&value)));
            }
        };
        push("kafka.bootstrap_servers", self.bootstrap_servers.clone());
        push("app.application_id", self.application_id.clone());
        push("app.instance_id", self.instance_id.clone());
        push(
            "app.state_dir",
            self.state_dir.as_ref().map(|p| p.display().to_string()),
        );
        push(
            "app.processing_guarantee",
            self.processing_guarantee.clone(),
        );
        push("query.http_addr", self.http_addr.clone());
        push("query.resp_addr", self.resp_addr.clone());
        push("log.format", self.log_format.clone());
        overrides.extend(self.set.iter().cloned());
        Sources {
            file: self.config.clone(),
            env: std::env::vars().collect(),
            overrides,
        }
    }
}

/// Named flags are always strings, even when they look like numbers.
fn quote(value: &str) -> String {
    format!("{value:?}")
}
