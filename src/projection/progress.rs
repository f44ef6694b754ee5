//! What the projection has done: counters for the metrics, and a progress line in the log
//! every few seconds (rows/s, lag, errors), so an operator sees it catch up.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::telemetry::prometheus::{Exposition, Kind};

#[derive(Debug, Default)]
pub struct Counters {
    /// Records consumed from the topic, poison included.
    pub records: AtomicU64,
    /// Consumed records whose batch the target committed.
    pub committed_records: AtomicU64,
    /// Rows (or hashes) the target changed.
    pub written: AtomicU64,
    /// Newest updates the target already held at that revision or later: replays.
    pub unchanged: AtomicU64,
    /// Undecodable records, skipped.
    pub poison: AtomicU64,
    /// Updates the target refused (a persistence id too long for the schema), skipped.
    pub rejected: AtomicU64,
    pub batches: AtomicU64,
    pub batch_micros_total: AtomicU64,
    /// Records between the consumed positions and the partition ends, summed.
    pub lag: AtomicI64,
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition, names in the daemon's style.
    pub fn render(&self, target: &str) -> String {
        let batches = get(&self.batches);
        let rows: [(&str, Kind, &str, f64); 7] = [
            (
                "records_total",
                Kind::Counter,
                "hello-counts records consumed",
                get(&self.records) as f64,
            ),
            (
                "rows_written_total",
                Kind::Counter,
                "rows or hashes changed in the target",
                get(&self.written) as f64,
            ),
            (
                "rows_unchanged_total",
                Kind::Counter,
                "updates the target already held (replays)",
                get(&self.unchanged) as f64,
            ),
            (
                "errors_total",
                Kind::Counter,
                "records skipped: undecodable, or refused by the target's schema",
                (get(&self.poison) + get(&self.rejected)) as f64,
            ),
            (
                "batches_total",
                Kind::Counter,
                "transactions committed in the target",
                batches as f64,
            ),
            (
                "batch_latency_avg_seconds",
                Kind::Gauge,
                "mean time to write and commit a batch",
                if batches == 0 {
                    0.0
                } else {
                    get(&self.batch_micros_total) as f64 / batches as f64 / 1e6
                },
            ),
            (
                "lag",
                Kind::Gauge,
                "records behind the partition ends (commit markers included)",
                self.lag.load(Ordering::Relaxed) as f64,
            ),
        ];
        let mut e = Exposition::new();
        for (name, kind, help, value) in rows {
            let name = format!("hello_streams_projection_{name}");
            e.family(&name, kind, help)
                .sample(&name, &[("target", target)], value);
        }
        e.finish()
    }
}

/// Logs a progress line at most every `every`.
pub struct Progress {
    every: Duration,
    last: Instant,
    last_written: u64,
    last_records: u64,
}

impl Progress {
    pub fn new(every: Duration) -> Self {
        Progress {
            every,
            last: Instant::now(),
            last_written: 0,
            last_records: 0,
        }
    }

    pub fn maybe_log(&mut self, counters: &Counters, target: &str) {
        let elapsed = self.last.elapsed();
        if elapsed < self.every {
            return;
        }
        let written = get(&counters.written);
        let records = get(&counters.records);
        let seconds = elapsed.as_secs_f64();
        if records != self.last_records {
            tracing::info!(
                target_name = target,
                rows_per_s = ((written - self.last_written) as f64 / seconds).round(),
                records_per_s = ((records - self.last_records) as f64 / seconds).round(),
                written,
                unchanged = get(&counters.unchanged),
                errors = get(&counters.poison) + get(&counters.rejected),
                lag = counters.lag.load(Ordering::Relaxed),
                "projection progress"
            );
        }
        self.last = Instant::now();
        self.last_written = written;
        self.last_records = records;
    }
}

/// Answers every connection with the metrics (`curl <addr>/metrics`): one request each, so
/// a scraper needs nothing more, and the projection needs no HTTP stack of its own.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    counters: std::sync::Arc<Counters>,
    target: &'static str,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            // Answering before the whole request is in would reset the connection under a
            // client still writing it.
            let mut request = Vec::with_capacity(512);
            let mut chunk = [0u8; 512];
            let read_head = async {
                while request.len() < 8192 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), read_head).await;
            let body = counters.render(target);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
