//! Logs and metrics.
//!
//! Metric names follow Kafka Streams' (`process-rate`, `commit-latency-avg`, `restore-rate`,
//! `dropped-records-total`, ...) rewritten the Prometheus way (`hello_streams_process_total`,
//! ...), so a Kafka Streams dashboard maps over one to one.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Sets up tracing on stderr. `filter` was validated by the config; `RUST_LOG` wins when set.
/// Text is coloured only when stderr is a terminal (and `NO_COLOR` is unset): escapes in a log
/// file or a journal are noise. JSON puts the fields at the top level of one object a line,
/// as log shippers index them.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Counters shared by the stream thread, restores and the query servers.
#[derive(Debug, Default)]
pub struct Metrics {
    pub records_processed: AtomicU64,
    pub hellos_counted: AtomicU64,
    pub records_dead_lettered: AtomicU64,
    pub records_skipped_replayed: AtomicU64,
    /// At least once: input folded again after a crash because its output may be missing.
    pub records_reprocessed: AtomicU64,
    /// 1 while the stall watchdog finds a stream thread making no progress.
    pub stalled_threads: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    pub commit_latency_us_total: AtomicU64,
    pub commit_latency_us_max: AtomicU64,
    pub restored_records: AtomicU64,
    pub restore_micros_total: AtomicU64,
    pub stores_rebuilt: AtomicU64,
    pub punctuations: AtomicU64,
    pub rebalances: AtomicU64,
    pub producer_recreated: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn processed(&self) {
        add(&self.records_processed, 1);
    }

    pub fn commit_took(&self, latency: Duration) {
        let us = latency.as_micros() as u64;
        add(&self.commits, 1);
        add(&self.commit_latency_us_total, us);
        self.commit_latency_us_max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn restored(&self, records: u64, took: Duration) {
        add(&self.restored_records, records);
        add(&self.restore_micros_total, took.as_micros() as u64);
    }

    pub fn inc(counter: &AtomicU64) {
        add(counter, 1);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        add(counter, n);
    }

    /// Prometheus text exposition.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let commits = get(&self.commits);
        let restore_secs = get(&self.restore_micros_total) as f64 / 1e6;
        let restored = get(&self.restored_records);
        let rows: Vec<(&str, &str, &str, f64)> = vec![
            (
                "hello_streams_process_total",
                "counter",
                "records taken from the input topic (Kafka Streams: process-total)",
                get(&self.records_processed) as f64,
            ),
            (
                "hello_streams_hellos_counted_total",
                "counter",
                "hellos that increased a count",
                get(&self.hellos_counted) as f64,
            ),
            (
                "hello_streams_dropped_records_total",
                "counter",
                "records sent to the dead-letter topic (Kafka Streams: dropped-records-total)",
                get(&self.records_dead_lettered) as f64,
            ),
            (
                "hello_streams_replayed_records_skipped_total",
                "counter",
                "records at or below a key's last applied offset, skipped",
                get(&self.records_skipped_replayed) as f64,
            ),
            (
                "hello_streams_reprocessed_records_total",
                "counter",
                "at least once: input records folded again after a crash because their output may not have been delivered (their output records may repeat)",
                get(&self.records_reprocessed) as f64,
            ),
            (
                "hello_streams_stalled_threads",
                "gauge",
                "stream threads that made no progress for longer than the stall bound while they had work",
                get(&self.stalled_threads) as f64,
            ),
            (
                "hello_streams_commit_total",
                "counter",
                "committed transactions or offset commits (Kafka Streams: commit-total)",
                commits as f64,
            ),
            (
                "hello_streams_abort_total",
                "counter",
                "aborted transactions",
                get(&self.aborts) as f64,
            ),
            (
                "hello_streams_commit_latency_avg_seconds",
                "gauge",
                "mean commit latency (Kafka Streams: commit-latency-avg)",
                if commits == 0 {
                    0.0
                } else {
                    get(&self.commit_latency_us_total) as f64 / commits as f64 / 1e6
                },
            ),
            (
                "hello_streams_commit_latency_max_seconds",
                "gauge",
                "max commit latency (Kafka Streams: commit-latency-max)",
                get(&self.commit_latency_us_max) as f64 / 1e6,
            ),
            (
                "hello_streams_restore_total",
                "counter",
                "changelog records restored (Kafka Streams: restore-total)",
                restored as f64,
            ),
            (
                "hello_streams_restore_rate",
                "gauge",
                "records restored per second of restoring (Kafka Streams: restore-rate)",
                if restore_secs > 0.0 {
                    restored as f64 / restore_secs
                } else {
                    0.0
                },
            ),
            (
                "hello_streams_stores_rebuilt_total",
                "counter",
                "stores wiped and rebuilt (RocksDB reported corruption, or the checkpoint is beyond the changelog's end)",
                get(&self.stores_rebuilt) as f64,
            ),
            (
                "hello_streams_punctuations_total",
                "counter",
                "wall-clock resets applied",
                get(&self.punctuations) as f64,
            ),
            (
                "hello_streams_rebalances_total",
                "counter",
                "partition assignment changes",
                get(&self.rebalances) as f64,
            ),
            (
                "hello_streams_producer_recreated_total",
                "counter",
                "producers recreated after fencing or an unknown commit outcome",
                get(&self.producer_recreated) as f64,
            ),
        ];
        let mut out = String::with_capacity(4096);
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        for (name, help, value) in extra {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        out
    }
}
