//! Projections: every key's latest state, from the committed `hello-counts` records, into
//! PostgreSQL (the seed's Pekko R2DBC tables) or Redis (a hash per key), exactly once.
//!
//! How a record gets there:
//! 1. A `read_committed` consumer in the projection's own group reads `hello-counts`; on
//!    assignment each partition is positioned after the offset the target stored
//!    ([`offsets`]), never where the group's committed offset says.
//! 2. Records are decoded ([`record`]); an undecodable one is counted, logged and skipped,
//!    only its offset goes on.
//! 3. Each partition collects a [`batch`]; when it is full or old enough, the target writes
//!    each key's newest update and the batch's last offset in one transaction
//!    ([`postgres`]) or one atomic script ([`redis`]). A row is written only when its
//!    revision is higher than the stored one, so replaying a batch changes nothing.
//! 4. [`progress`] counts rows, errors and lag and logs them; [`verify`] compares a
//!    daemon's stores with the targets key by key.
//!
//! Exactly once follows from the offsets living with the data: a crash before the target's
//! commit leaves both old, a crash after it leaves both new, and the restarted projection
//! resumes from the stored offsets. Punctuator resets (`app.reset_interval_ms`) produce no
//! `hello-counts` record and so do not reach the targets.

pub mod batch;
pub mod offsets;
pub mod postgres;
pub mod progress;
pub mod record;
pub mod redis;
pub mod slice;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use tokio::runtime::Runtime;

use crate::config::Config;
use crate::shutdown::Shutdown;
use batch::Batch;
use offsets::{ProjectionConsumer, ProjectionContext};
use progress::{Counters, Progress};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("kafka client failed")]
    Kafka(#[from] KafkaError),
    #[error("projection group `{0}` is not a valid name: use 1 to 200 letters, digits, '.', '_' and '-'")]
    Group(String),
    #[error("entity type `{0}` must be 1 to 100 characters without `|`")]
    EntityType(String),
    #[error("cannot listen on {addr} (metrics)")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Postgres(#[from] postgres::PostgresError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// What the consuming side needs; the targets take their own options.
#[derive(Debug, Clone)]
pub struct Settings {
    pub topic: String,
    pub group: String,
    /// Records in a partition's batch before it is written.
    pub batch_records: usize,
    /// Age of a partition's open batch before it is written.
    pub batch_interval: Duration,
    pub progress_every: Duration,
    /// Where to serve the Prometheus metrics; `None`: nowhere (the log still has them).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Settings {
    /// The default group is per target: two projections of the same topic each read all of
    /// it.
    pub fn new(
        config: &Config,
        target: &str,
        group: Option<String>,
    ) -> Result<Self, ProjectionError> {
        let group =
            group.unwrap_or_else(|| format!("{}-projection-{target}", config.application_id));
        let valid = !group.is_empty()
            && group.len() <= 200
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(ProjectionError::Group(group));
        }
        Ok(Settings {
            topic: config.topics.output.clone(),
            group,
            batch_records: 5_000,
            batch_interval: Duration::from_millis(100),
            progress_every: Duration::from_secs(5),
            metrics_addr: None,
        })
    }
}

pub fn check_entity_type(entity_type: &str) -> Result<(), ProjectionError> {
    let chars = entity_type.chars().count();
    if chars == 0 || chars > 100 || entity_type.contains(slice::SEPARATOR) {
        return Err(ProjectionError::EntityType(entity_type.to_owned()));
    }
    Ok(())
}

/// What one batch did in the target.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub written: u64,
    /// Newest updates the target already held (a replay).
    pub unchanged: u64,
    /// Updates the target cannot hold (a persistence id too long for the schema).
    pub rejected: u64,
}

/// A place the projection writes to. Both calls run on the projection's runtime.
pub trait Target {
    const NAME: &'static str;
    type Error: Into<ProjectionError>;

    /// The last applied offset of each of `partitions` the target has one for.
    fn stored_offsets(
        &mut self,
        group: &str,
        partitions: &[i32],
    ) -> impl Future<Output = Result<HashMap<i32, i64>, Self::Error>>;

    /// Writes the batch's newest update per key (revision-guarded) and its last offset,
    /// atomically.
    fn apply(
        &mut self,
        group: &str,
        batch: &Batch,
    ) -> impl Future<Output = Result<Applied, Self::Error>>;
}

/// A runtime for the target's client; the Kafka loop stays on the calling thread.
pub fn runtime() -> Result<Runtime, ProjectionError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("projection-io")
        .enable_all()
        .build()
        .map_err(ProjectionError::Runtime)
}

/// Fires `trigger` on SIGINT or SIGTERM; a second signal exits at once.
pub fn stop_on_signal(runtime: &Runtime, trigger: crate::shutdown::Trigger) {
    runtime.spawn(async move {
        crate::daemon::wait_for_signal().await;
        tracing::info!("stopping: writing open batches (signal again to exit at once)");
        trigger.fire();
        crate::daemon::wait_for_signal().await;
        eprintln!("second signal: exiting without writing open batches");
        std::process::exit(130);
    });
}

/// The whole command: open the target on a fresh runtime, consume until SIGINT/SIGTERM.
pub fn run_command<T: Target>(
    config: &Config,
    settings: &Settings,
    open: impl Future<Output = Result<T, T::Error>>,
) -> Result<(), ProjectionError> {
    let runtime = runtime()?;
    let (trigger, shutdown) = crate::shutdown::channel();
    let mut target = runtime.block_on(open).map_err(Into::into)?;
    stop_on_signal(&runtime, trigger);
    let counters = Arc::new(Counters::default());
    if let Some(addr) = settings.metrics_addr {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| ProjectionError::Bind { addr, source })?;
        runtime.spawn(progress::serve_metrics(listener, counters.clone(), T::NAME));
    }
    run(
        config,
        settings,
        &runtime,
        &mut target,
        &counters,
        &shutdown,
    )
}

fn create_consumer(config: &Config, settings: &Settings) -> Result<ProjectionConsumer, KafkaError> {
    let mut client = crate::kafka::group_member_config(config, &settings.group);
    client
        .set("client.id", format!("{}-client", settings.group))
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        // A drained queue is refilled at once instead of after librdkafka's 1 s backoff.
        .set("fetch.queue.backoff.ms", "10");
    for (key, value) in &config.kafka.consumer {
        client.set(key, value);
    }
    client.create_with_context(ProjectionContext::new(&settings.topic))
}

/// Consumes until `shutdown` fires, then writes the open batches and returns.
pub fn run<T: Target>(
    config: &Config,
    settings: &Settings,
    runtime: &Runtime,
    target: &mut T,
    counters: &Arc<Counters>,
    shutdown: &Shutdown,
) -> Result<(), ProjectionError> {
    let consumer = create_consumer(config, settings)?;
    consumer.subscribe(&[&settings.topic])?;
    tracing::info!(
        target_name = T::NAME,
        group = settings.group,
        topic = settings.topic,
        "projection started"
    );
    let mut projection = Loop {
        settings,
        runtime,
        target,
        counters,
        consumer: &consumer,
        next: BTreeMap::new(),
        batches: BTreeMap::new(),
    };
    let mut progress = Progress::new(settings.progress_every);
    while !shutdown.is_triggered() {
        let message = consumer.poll(projection.poll_timeout());
        projection.apply_moves()?;
        match message {
            None => {}
            Some(Ok(message)) => projection.consume(&message),
            // librdkafka retries by itself; the loop only needs to know about it.
            Some(Err(error)) => tracing::warn!(%error, "kafka consumer error"),
        }
        projection.write_due(false)?;
        progress.maybe_log(counters, T::NAME);
    }
    projection.write_due(true)?;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        target_name = T::NAME,
        records = get(&counters.records),
        written = get(&counters.written),
        unchanged = get(&counters.unchanged),
        errors = get(&counters.poison) + get(&counters.rejected),
        "projection stopped"
    );
    Ok(())
}

struct Loop<'a, T: Target> {
    settings: &'a Settings,
    runtime: &'a Runtime,
    target: &'a mut T,
    counters: &'a Arc<Counters>,
    consumer: &'a ProjectionConsumer,
    /// Positioned partitions and the next offset each expects.
    next: BTreeMap<i32, i64>,
    batches: BTreeMap<i32, Batch>,
}

impl<T: Target> Loop<'_, T> {
    fn poll_timeout(&self) -> Duration {
        let oldest = self.batches.values().map(|b| b.opened).min();
        let due = oldest.map_or(Duration::from_millis(100), |opened| {
            self.settings
                .batch_interval
                .saturating_sub(opened.elapsed())
        });
        due.min(Duration::from_millis(100))
    }

    fn apply_moves(&mut self) -> Result<(), ProjectionError> {
        let moves = self.consumer.context().take_moves();
        for partition in &moves.revoked {
            self.next.remove(partition);
            if let Some(batch) = self.batches.remove(partition) {
                tracing::info!(
                    partition,
                    records = batch.records(),
                    "partition revoked: its open batch is left to the next owner"
                );
            }
        }
        if moves.assigned.is_empty() {
            return Ok(());
        }
        let stored = self
            .runtime
            .block_on(
                self.target
                    .stored_offsets(&self.settings.group, &moves.assigned),
            )
            .map_err(Into::into)?;
        let mut starts = Vec::with_capacity(moves.assigned.len());
        for &partition in &moves.assigned {
            let at = stored.get(&partition).copied();
            starts.push((partition, offsets::resume_at(at)));
            self.next.insert(partition, at.map_or(0, |o| o + 1));
        }
        offsets::position(self.consumer, &self.settings.topic, &starts)?;
        tracing::info!(
            ?starts,
            "partitions assigned, resuming after the stored offsets"
        );
        Ok(())
    }

    fn consume(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        let Some(next) = self.next.get_mut(&partition) else {
            return; // not positioned yet, or revoked: the seek brings it back
        };
        if offset < *next {
            return; // fetched before the seek
        }
        *next = offset + 1;
        Counters::add(&self.counters.records, 1);
        let update = match record::decode(message.key(), message.payload(), offset) {
            Ok(update) => Some(update),
            Err(poison) => {
                Counters::add(&self.counters.poison, 1);
                tracing::warn!(partition, offset, %poison, "skipping a record");
                None
            }
        };
        self.batches
            .entry(partition)
            .or_insert_with(|| Batch::new(partition, offset))
            .push(offset, update);
    }

    /// Writes every batch that is full or old enough (all of them when `all`).
    fn write_due(&mut self, all: bool) -> Result<(), ProjectionError> {
        let due: Vec<i32> = self
            .batches
            .values()
            .filter(|b| {
                all || b.records() >= self.settings.batch_records
                    || b.opened.elapsed() >= self.settings.batch_interval
            })
            .map(|b| b.partition)
            .collect();
        for partition in &due {
            if let Some(batch) = self.batches.remove(partition) {
                self.write(&batch)?;
            }
        }
        if !due.is_empty() {
            self.update_lag();
        }
        Ok(())
    }

    fn write(&mut self, batch: &Batch) -> Result<(), ProjectionError> {
        let started = Instant::now();
        let applied = self
            .runtime
            .block_on(self.target.apply(&self.settings.group, batch))
            .map_err(Into::into)?;
        let c = &self.counters;
        Counters::add(&c.written, applied.written);
        Counters::add(&c.unchanged, applied.unchanged);
        Counters::add(&c.rejected, applied.rejected);
        Counters::add(&c.batches, 1);
        Counters::add(&c.committed_records, batch.records() as u64);
        Counters::add(&c.batch_micros_total, started.elapsed().as_micros() as u64);
        // Only for lag tools (kafka-consumer-groups); the target's offsets are the truth.
        let mut committed = TopicPartitionList::new();
        if committed
            .add_partition_offset(
                &self.settings.topic,
                batch.partition,
                rdkafka::Offset::Offset(batch.last_offset + 1),
            )
            .is_ok()
        {
            if let Err(error) = self.consumer.commit(&committed, CommitMode::Async) {
                tracing::debug!(%error, "group offset commit failed");
            }
        }
        Ok(())
    }

    fn update_lag(&self) {
        let mut lag = 0i64;
        for (&partition, &next) in &self.next {
            if let Some(high) =
                crate::kafka::cached_high_watermark(self.consumer, &self.settings.topic, partition)
            {
                lag += (high - next).max(0);
            }
        }
        self.counters
            .lag
            .store(lag, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch, for `last_updated` columns.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
