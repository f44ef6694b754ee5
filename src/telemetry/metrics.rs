//! The daemon's metrics.
//!
//! Names follow Kafka Streams' (`process-total`, `commit-latency-avg`, `restore-rate`,
//! `dropped-records-total`, `record-e2e-latency`, ...) rewritten the Prometheus way
//! (`hello_streams_process_total`, ...), so a Kafka Streams dashboard maps over one to one.
//! Thread-level metrics carry a `thread` label as Kafka Streams' carry `thread-id`; sum over
//! it for the instance.
//!
//! Counters of records count committed work only: an aborted transaction's records are
//! processed again, and counting them twice would make a rate that a crash inflates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::prometheus::{Exposition, Histogram, Kind, COMMIT_BOUNDS, END_TO_END_BOUNDS};

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

type Counter = fn(&ThreadMetrics) -> &AtomicU64;

/// The thread-level counters: name, help, field.
const THREAD_COUNTERS: &[(&str, &str, Counter)] = &[
    (
        "hello_streams_process_total",
        "input records of committed transactions (Kafka Streams: process-total)",
        |t| &t.records_processed,
    ),
    (
        "hello_streams_hellos_counted_total",
        "committed hellos that increased a count",
        |t| &t.hellos_counted,
    ),
    (
        "hello_streams_dropped_records_total",
        "records committed to the dead-letter topic (Kafka Streams: dropped-records-total)",
        |t| &t.records_dead_lettered,
    ),
    (
        "hello_streams_late_records_total",
        "records dead-lettered because their window had closed (Kafka Streams: dropped-records for late records)",
        |t| &t.records_late,
    ),
    (
        "hello_streams_replayed_records_skipped_total",
        "records at or below a key's last applied offset, skipped",
        |t| &t.records_skipped_replayed,
    ),
    (
        "hello_streams_commit_total",
        "committed transactions or offset commits (Kafka Streams: commit-total)",
        |t| &t.commits,
    ),
    ("hello_streams_abort_total", "aborted transactions", |t| {
        &t.aborts
    }),
    (
        "hello_streams_punctuations_total",
        "wall-clock resets applied",
        |t| &t.punctuations,
    ),
    (
        "hello_streams_rebalances_total",
        "partition assignment changes",
        |t| &t.rebalances,
    ),
    (
        "hello_streams_producer_recreated_total",
        "producers recreated after fencing or an unknown commit outcome",
        |t| &t.producer_recreated,
    ),
];

/// Shared by the stream threads, restores and the query servers.
#[derive(Debug)]
pub struct Metrics {
    threads: Box<[ThreadMetrics]>,
    /// At least once: input folded again after a crash because its output may be missing.
    pub records_reprocessed: AtomicU64,
    /// Stream threads the stall watchdog finds making no progress.
    pub stalled_threads: AtomicU64,
    pub restored_records: AtomicU64,
    pub restore_micros_total: AtomicU64,
    pub stores_rebuilt: AtomicU64,
    /// The query servers.
    pub http: Arc<ServerStats>,
    pub resp: Arc<ServerStats>,
}

/// One query server's connections and requests.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub accepted: AtomicU64,
    /// Refused at the connection cap.
    pub refused: AtomicU64,
    pub closed: AtomicU64,
    /// HTTP requests, RESP commands.
    pub requests: AtomicU64,
    /// Reads passed on to the instance owning the key.
    pub forwarded: AtomicU64,
}

/// Counts a connection closed when dropped.
pub struct OpenConnection(Arc<ServerStats>);

impl ServerStats {
    /// Counts an accepted connection; it stays open until the guard is dropped.
    pub fn opened(self: &Arc<Self>) -> OpenConnection {
        add(&self.accepted, 1);
        OpenConnection(self.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        add(&self.0.closed, 1);
    }
}

/// One stream thread's metrics.
#[derive(Debug)]
pub struct ThreadMetrics {
    pub records_processed: AtomicU64,
    pub hellos_counted: AtomicU64,
    pub records_dead_lettered: AtomicU64,
    pub records_skipped_replayed: AtomicU64,
    pub records_late: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    pub punctuations: AtomicU64,
    pub rebalances: AtomicU64,
    pub producer_recreated: AtomicU64,
    commit_latency: Histogram,
    commit_latency_us_max: AtomicU64,
    end_to_end: Histogram,
}

/// What the open transaction did, counted into its thread's metrics only if it commits.
#[derive(Debug, Default)]
pub struct Uncommitted {
    pub processed: u64,
    pub counted: u64,
    pub dead_lettered: u64,
    pub skipped_replayed: u64,
    /// Records the window store refused as late (also counted as dead-lettered).
    pub late: u64,
    /// The input records' timestamps (ms), for the end-to-end latency at commit.
    timestamps: Vec<i64>,
}

impl Uncommitted {
    /// Remembers an input record's timestamp; 0 or below means it has none.
    pub fn record_timestamp(&mut self, timestamp_ms: i64) {
        if timestamp_ms > 0 {
            self.timestamps.push(timestamp_ms);
        }
    }

    /// The transaction aborted: its records will be processed again.
    pub fn discard(&mut self) {
        self.processed = 0;
        self.counted = 0;
        self.dead_lettered = 0;
        self.skipped_replayed = 0;
        self.late = 0;
        self.timestamps.clear();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(1)
    }
}

impl Metrics {
    pub fn new(threads: usize) -> Self {
        Metrics {
            threads: (0..threads.max(1)).map(|_| ThreadMetrics::new()).collect(),
            records_reprocessed: AtomicU64::new(0),
            stalled_threads: AtomicU64::new(0),
            restored_records: AtomicU64::new(0),
            restore_micros_total: AtomicU64::new(0),
            stores_rebuilt: AtomicU64::new(0),
            http: Arc::default(),
            resp: Arc::default(),
        }
    }

    /// Thread `index`'s metrics (a thread beyond the count shares the last one's).
    pub fn thread(&self, index: usize) -> &ThreadMetrics {
        &self.threads[index.min(self.threads.len() - 1)]
    }

    /// A thread-level counter summed over the threads.
    pub fn total(&self, counter: impl Fn(&ThreadMetrics) -> &AtomicU64) -> u64 {
        self.threads.iter().map(|t| get(counter(t))).sum()
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

    /// Writes the thread and instance families; the caller adds task-level ones.
    pub fn render(&self, e: &mut Exposition) {
        let labels: Vec<String> = (0..self.threads.len()).map(|i| i.to_string()).collect();
        let per_thread = |e: &mut Exposition,
                          name: &str,
                          kind: Kind,
                          help: &str,
                          value: &dyn Fn(&ThreadMetrics) -> f64| {
            e.family(name, kind, help);
            for (thread, label) in self.threads.iter().zip(&labels) {
                e.sample(name, &[("thread", label)], value(thread));
            }
        };
        for (name, help, counter) in THREAD_COUNTERS {
            per_thread(e, name, Kind::Counter, help, &|t| get(counter(t)) as f64);
        }
        e.family(
            "hello_streams_commit_latency_seconds",
            Kind::Histogram,
            "time to commit a transaction: input offsets, changelog and output (Kafka Streams: commit-latency)",
        );
        for (thread, label) in self.threads.iter().zip(&labels) {
            e.histogram(
                "hello_streams_commit_latency_seconds",
                &[("thread", label)],
                &thread.commit_latency,
            );
        }
        per_thread(
            e,
            "hello_streams_commit_latency_avg_seconds",
            Kind::Gauge,
            "mean commit latency since start (Kafka Streams: commit-latency-avg)",
            &|t| {
                let n = t.commit_latency.count();
                if n == 0 {
                    0.0
                } else {
                    t.commit_latency.sum_seconds() / n as f64
                }
            },
        );
        per_thread(
            e,
            "hello_streams_commit_latency_max_seconds",
            Kind::Gauge,
            "max commit latency (Kafka Streams: commit-latency-max)",
            &|t| get(&t.commit_latency_us_max) as f64 / 1e6,
        );
        e.family(
            "hello_streams_record_e2e_latency_seconds",
            Kind::Histogram,
            "from an input record's timestamp to the commit that made its output visible (Kafka Streams: record-e2e-latency, taken at commit)",
        );
        for (thread, label) in self.threads.iter().zip(&labels) {
            e.histogram(
                "hello_streams_record_e2e_latency_seconds",
                &[("thread", label)],
                &thread.end_to_end,
            );
        }
        let restored = get(&self.restored_records);
        let restore_secs = get(&self.restore_micros_total) as f64 / 1e6;
        e.single(
            "hello_streams_reprocessed_records_total",
            Kind::Counter,
            "at least once: input records folded again after a crash because their output may not have been delivered (their output records may repeat)",
            get(&self.records_reprocessed) as f64,
        )
        .single(
            "hello_streams_stalled_threads",
            Kind::Gauge,
            "stream threads that made no progress for longer than the stall bound while they had work",
            get(&self.stalled_threads) as f64,
        )
        .single(
            "hello_streams_restore_total",
            Kind::Counter,
            "changelog records restored (Kafka Streams: restore-total)",
            restored as f64,
        )
        .single(
            "hello_streams_restore_rate",
            Kind::Gauge,
            "records restored per second of restoring (Kafka Streams: restore-rate)",
            if restore_secs > 0.0 {
                restored as f64 / restore_secs
            } else {
                0.0
            },
        )
        .single(
            "hello_streams_stores_rebuilt_total",
            Kind::Counter,
            "stores wiped and rebuilt (RocksDB reported corruption, or the checkpoint is beyond the changelog's end)",
            get(&self.stores_rebuilt) as f64,
        );
        self.render_servers(e);
    }

    fn render_servers(&self, e: &mut Exposition) {
        let servers = [("http", &self.http), ("resp", &self.resp)];
        let families: [(&str, Kind, &str, fn(&ServerStats) -> f64); 5] = [
            (
                "hello_streams_query_connections_total",
                Kind::Counter,
                "query connections accepted",
                |s| get(&s.accepted) as f64,
            ),
            (
                "hello_streams_query_connections_refused_total",
                Kind::Counter,
                "query connections refused at the connection cap",
                |s| get(&s.refused) as f64,
            ),
            (
                "hello_streams_query_connections_open",
                Kind::Gauge,
                "query connections open",
                |s| get(&s.accepted).saturating_sub(get(&s.closed)) as f64,
            ),
            (
                "hello_streams_query_requests_total",
                Kind::Counter,
                "HTTP requests and RESP commands received",
                |s| get(&s.requests) as f64,
            ),
            (
                "hello_streams_query_forwarded_total",
                Kind::Counter,
                "reads forwarded to the instance that owns the key",
                |s| get(&s.forwarded) as f64,
            ),
        ];
        for (name, kind, help, value) in families {
            e.family(name, kind, help);
            for (server, stats) in servers {
                e.sample(name, &[("server", server)], value(stats));
            }
        }
    }
}

impl ThreadMetrics {
    fn new() -> Self {
        ThreadMetrics {
            records_processed: AtomicU64::new(0),
            hellos_counted: AtomicU64::new(0),
            records_dead_lettered: AtomicU64::new(0),
            records_skipped_replayed: AtomicU64::new(0),
            records_late: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            punctuations: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            producer_recreated: AtomicU64::new(0),
            commit_latency: Histogram::new(COMMIT_BOUNDS),
            commit_latency_us_max: AtomicU64::new(0),
            end_to_end: Histogram::new(END_TO_END_BOUNDS),
        }
    }

    /// A transaction committed at `now_ms` after `latency`: its work now counts.
    pub fn committed(&self, work: &mut Uncommitted, latency: Duration, now_ms: i64) {
        add(&self.commits, 1);
        self.commit_latency.observe(latency);
        self.commit_latency_us_max
            .fetch_max(latency.as_micros() as u64, Ordering::Relaxed);
        add(&self.records_processed, work.processed);
        add(&self.hellos_counted, work.counted);
        add(&self.records_dead_lettered, work.dead_lettered);
        add(&self.records_skipped_replayed, work.skipped_replayed);
        add(&self.records_late, work.late);
        if !work.timestamps.is_empty() {
            let mut counts = vec![0u64; self.end_to_end.buckets()];
            let mut sum_micros = 0u64;
            for ts in &work.timestamps {
                // A producer's clock ahead of ours is not a negative latency.
                let micros = (now_ms - ts).max(0) as u64 * 1_000;
                counts[self.end_to_end.bucket_of(micros)] += 1;
                sum_micros = sum_micros.saturating_add(micros);
            }
            self.end_to_end.add(&counts, sum_micros);
        }
        work.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &Metrics) -> String {
        let mut e = Exposition::new();
        m.render(&mut e);
        e.finish()
    }

    #[test]
    fn only_committed_work_counts() {
        let m = Metrics::new(2);
        let mut work = Uncommitted::default();
        work.processed = 5;
        work.counted = 4;
        work.dead_lettered = 1;
        work.record_timestamp(1_000);
        work.discard(); // aborted
        work.processed = 3;
        work.counted = 3;
        work.record_timestamp(1_000);
        work.record_timestamp(1_990);
        m.thread(1)
            .committed(&mut work, Duration::from_millis(20), 2_000);
        let text = scrape(&m);
        assert!(
            text.contains("hello_streams_process_total{thread=\"0\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("hello_streams_process_total{thread=\"1\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("hello_streams_dropped_records_total{thread=\"1\"} 0\n"));
        assert!(
            text.contains(
                "hello_streams_commit_latency_seconds_bucket{thread=\"1\",le=\"0.025\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("hello_streams_commit_latency_seconds_count{thread=\"1\"} 1\n"));
        // 10 ms and 1 s
        assert!(
            text.contains(
                "hello_streams_record_e2e_latency_seconds_bucket{thread=\"1\",le=\"0.01\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "hello_streams_record_e2e_latency_seconds_bucket{thread=\"1\",le=\"1\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("hello_streams_record_e2e_latency_seconds_sum{thread=\"1\"} 1.01\n"),
            "{text}"
        );
        assert_eq!(m.total(|t| &t.records_processed), 3);
        assert_eq!(work.processed, 0);
    }
}
