//! Rebuilding a partition's store from its changelog.
//!
//! A restore reads the changelog partition `read_committed` from the store's checkpoint to the
//! partition's *true* end and writes it in large batches, each carrying the new checkpoint, so
//! an interrupted restore resumes where it stopped.
//!
//! The true end is the high watermark a `read_uncommitted` reader sees, taken when the restore
//! starts (Kafka Streams does the same: KAFKA-10167). A `read_committed` reader stops at the
//! last stable offset, which is the first record of the oldest open transaction: when a dead
//! owner left one open, everything committed after it (by the new owner) lies beyond. Stopping
//! there restored a stale store, and a store that had already folded those later updates looked
//! "ahead of the changelog" and was wiped. So the restore is done only when the consumer's
//! position reaches the true end; while an open transaction holds it back, it waits for the
//! transaction to be committed or aborted (the broker aborts it at the transaction timeout),
//! bounded, and says what it waits for. The position, not the last record's offset, is what
//! counts: the end is usually a commit or abort marker, which carries no record.
//!
//! A partition store has one changelog per store the application declared, each with its own
//! checkpoint, and a restore brings every one to its true end.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::{reader_config, Reader, ReaderContext};
use crate::shutdown::Shutdown;

use super::{Store, StoreError};
use crate::engine::application::StoreId;

const BATCH_RECORDS: usize = 20_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long one broker request may take before the restore checks for cancellation again.
const SLICE: Duration = Duration::from_secs(1);
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(30);
/// On top of the transaction timeout: the broker looks for timed-out transactions only every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms` (10 s by default), and then
/// writes the abort markers.
const OPEN_TRANSACTION_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog read failed")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "checkpoint {checkpoint} is beyond the end {end} of {topic} [{partition}] (the topic was deleted or truncated)"
    )]
    CheckpointAhead {
        topic: String,
        partition: i32,
        checkpoint: u64,
        end: i64,
    },
    #[error(
        "{topic} [{partition}]: the restore stood at offset {position} short of the end {end} \
         for {waited:?} (last stable offset {stable}: a transaction open there should have been \
         aborted at the transaction timeout; last client error: {last_error})"
    )]
    Stuck {
        topic: String,
        partition: i32,
        position: i64,
        stable: i64,
        end: i64,
        waited: Duration,
        last_error: String,
    },
    #[error("restore cancelled")]
    Cancelled,
}

/// Whether a restore should stop early (revoke, shutdown).
pub trait Cancel {
    fn cancelled(&self) -> bool;
}

impl Cancel for AtomicBool {
    fn cancelled(&self) -> bool {
        self.load(Ordering::Relaxed)
    }
}

impl Cancel for Shutdown {
    fn cancelled(&self) -> bool {
        self.is_triggered()
    }
}

/// Progress of one restore, shared with the query servers (503 with progress) and logs.
#[derive(Debug)]
pub struct RestoreProgress {
    pub restored: AtomicU64,
    pub total: AtomicU64,
    /// The changelog offset at which an open transaction holds the restore back; -1: none.
    pub waiting_at: AtomicI64,
}

impl Default for RestoreProgress {
    fn default() -> Self {
        RestoreProgress {
            restored: AtomicU64::new(0),
            total: AtomicU64::new(0),
            waiting_at: AtomicI64::new(-1),
        }
    }
}

impl RestoreProgress {
    /// The offset an open transaction holds the restore at, if it waits for one.
    pub fn waiting_for_transaction_at(&self) -> Option<i64> {
        let at = self.waiting_at.load(Ordering::Relaxed);
        (at >= 0).then_some(at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    /// Changelog records read (applied or not).
    pub records: u64,
    /// Records not applied because they describe input the task will process again.
    pub held_back: u64,
    pub elapsed: Duration,
    pub checkpoint: u64,
}

/// What to restore beyond "everything up to the true end".
#[derive(Debug, Clone, Default)]
pub struct RestoreLimits {
    /// Stop each store's changelog before this offset, by store (the drill rebuilds exactly
    /// what the checkpoints hold). A store past the end of the list is not restored at all.
    pub until: Option<Vec<u64>>,
    /// At-least-once: do not apply states that folded input at or after this offset. Their
    /// output records may never have been delivered, and the task replays that input from the
    /// committed offset; applying them would make the replay skip it as done.
    pub replay_from: Option<i64>,
}

/// Reads changelog partitions into stores.
pub struct Restorer {
    consumer: Reader,
    /// `read_uncommitted`: where the true end of a partition is.
    ends: Arc<Reader>,
    open_transaction_wait: Duration,
}

impl Restorer {
    /// `ends` comes from [`crate::kafka::create_end_reader`] and may be shared.
    pub fn new(config: &Config, ends: Arc<Reader>) -> Result<Self, KafkaError> {
        Ok(Restorer {
            consumer: reader_config(config).create_with_context(ReaderContext)?,
            ends,
            open_transaction_wait: config.kafka.transaction_timeout + OPEN_TRANSACTION_MARGIN,
        })
    }

    pub fn consumer(&self) -> &Reader {
        &self.consumer
    }

    /// Brings `store` up to the true end of changelog `partition`.
    pub fn restore(
        &self,
        store: &Store,
        partition: i32,
        progress: &RestoreProgress,
        cancel: &dyn Cancel,
    ) -> Result<RestoreReport, RestoreError> {
        self.restore_with(store, partition, RestoreLimits::default(), progress, cancel)
    }

    /// Low and high watermark of `topic` [`partition`] as a `read_uncommitted` reader sees
    /// them, asked in short slices so a cancel is noticed while the broker is away.
    pub fn true_end(
        &self,
        topic: &str,
        partition: i32,
        cancel: &dyn Cancel,
    ) -> Result<(i64, i64), RestoreError> {
        retry_sliced(cancel, || {
            let answer = self.ends.fetch_watermarks(topic, partition, SLICE);
            if answer.is_err() {
                // The shared client is never polled; after a broker outage its metadata
                // cache can keep a dead leader (UnknownPartition) until asked to refresh.
                let _ = self.ends.fetch_metadata(Some(topic), SLICE);
            }
            answer
        })
    }

    /// Brings each store of `store` up to the true end of its changelog, or to the limits'
    /// `until`.
    pub fn restore_with(
        &self,
        store: &Store,
        partition: i32,
        limits: RestoreLimits,
        progress: &RestoreProgress,
        cancel: &dyn Cancel,
    ) -> Result<RestoreReport, RestoreError> {
        let mut total: Option<RestoreReport> = None;
        for id in (0..store.stores()).map(StoreId) {
            let until = match &limits.until {
                None => None,
                Some(until) => match until.get(id.0) {
                    Some(&until) => Some(until),
                    None => continue,
                },
            };
            let report =
                self.restore_one(id, store, partition, until, &limits, progress, cancel)?;
            total = Some(match total {
                // The first store's checkpoint is the one a report names.
                None => report,
                Some(mut total) => {
                    total.records += report.records;
                    total.held_back += report.held_back;
                    total.elapsed += report.elapsed;
                    total
                }
            });
        }
        Ok(total.unwrap_or(RestoreReport {
            records: 0,
            held_back: 0,
            elapsed: Duration::ZERO,
            checkpoint: 0,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn restore_one(
        &self,
        id: StoreId,
        store: &Store,
        partition: i32,
        until: Option<u64>,
        limits: &RestoreLimits,
        progress: &RestoreProgress,
        cancel: &dyn Cancel,
    ) -> Result<RestoreReport, RestoreError> {
        let started = Instant::now();
        let topic = store.changelog(id);
        let (low, mut end) = self.true_end(topic, partition, cancel)?;
        if let Some(until) = until {
            end = end.min(until as i64);
        }
        let checkpoint = store.checkpoint(id)?.unwrap_or(0);
        if checkpoint as i64 > end && until.is_none() {
            return Err(RestoreError::CheckpointAhead {
                topic: topic.to_owned(),
                partition,
                checkpoint,
                end,
            });
        }
        let start = (checkpoint as i64).max(low);
        progress
            .total
            .store((end - start).max(0) as u64, Ordering::Relaxed);
        progress.restored.store(0, Ordering::Relaxed);
        let mut report = RestoreReport {
            records: 0,
            held_back: 0,
            elapsed: Duration::ZERO,
            checkpoint,
        };
        if start >= end {
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        // A new reader knows no topic yet: assigned one, librdkafka learns its leader on its
        // once-a-second topic scan and only then fetches, so a restore with anything to read
        // (if only the commit marker after the checkpoint) took a second (BENCHMARKS.md, "Why
        // the code is the way it is"). Asking for the topic's metadata first fills the cache
        // the assignment uses. Best effort: without it the scan still gets there.
        let _ = self.consumer.fetch_metadata(Some(topic), SLICE);
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
        self.consumer.assign(&assignment)?;
        let result = self.replay(id, store, partition, start, end, limits, progress, cancel);
        self.consumer.unassign()?;
        progress.waiting_at.store(-1, Ordering::Relaxed);
        let (records, held_back, next) = result?;
        report.records = records;
        report.held_back = held_back;
        report.checkpoint = next.max(checkpoint);
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The position of the restore consumer, which moves past transaction markers and aborted
    /// records as well as past the records it hands out.
    fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let position = self.consumer.position().ok()?;
        match position.find_partition(topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn replay(
        &self,
        id: StoreId,
        store: &Store,
        partition: i32,
        start: i64,
        end: i64,
        limits: &RestoreLimits,
        progress: &RestoreProgress,
        cancel: &dyn Cancel,
    ) -> Result<(u64, u64, u64), RestoreError> {
        let topic = store.changelog(id);
        let held_back_by = |key: &[u8], value: Option<&[u8]>| match (limits.replay_from, value) {
            (Some(from), Some(value)) => store
                .folded_offset(id, key, value)
                .is_some_and(|offset| offset >= from),
            _ => false,
        };
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(BATCH_RECORDS);
        let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(BATCH_RECORDS);
        let mut next_offset = start;
        let mut records = 0u64;
        let mut held_back = 0u64;
        let mut last_progress = Instant::now();
        // The last message or position move; a read that stands still short of the end is held
        // at the last stable offset by an open transaction (end-of-partition is not reported
        // when the read starts beyond that offset, so the clock decides).
        let mut last_advance = Instant::now();
        let mut last_error: Option<String> = None;
        let mut last_wait_log: Option<Instant> = None;
        let mut applied_up_to = start;
        loop {
            if cancel.cancelled() {
                return Err(RestoreError::Cancelled);
            }
            let reached_end = match self.consumer.poll(Duration::from_millis(100)) {
                // Wherever the read stopped: done if the position is at the true end.
                None | Some(Err(KafkaError::PartitionEOF(_))) => {
                    let position = self
                        .position(topic, partition)
                        .unwrap_or(next_offset)
                        .min(end);
                    if position > next_offset {
                        next_offset = position;
                        last_advance = Instant::now();
                    }
                    next_offset >= end
                }
                // librdkafka reconnects and retries on its own; the no-progress bound below
                // still ends a restore that never gets anywhere.
                Some(Err(error)) if is_transient(&error) => {
                    tracing::debug!(%error, partition, "changelog read: transient error");
                    last_error = Some(error.to_string());
                    false
                }
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(message)) => {
                    if message.offset() >= end {
                        // Only with an `until` limit: nothing past it belongs to this store.
                        true
                    } else {
                        // A tombstone deletes the key (an expired window, say).
                        match (message.key(), message.payload()) {
                            (None, _) => {}
                            (Some(key), value) if held_back_by(key, value) => {
                                held_back += 1;
                            }
                            (Some(key), value) => {
                                keys.push(key.to_vec());
                                values.push(value.map(<[u8]>::to_vec));
                            }
                        }
                        next_offset = message.offset() + 1;
                        records += 1;
                        last_advance = Instant::now();
                        last_error = None;
                        progress.waiting_at.store(-1, Ordering::Relaxed);
                        next_offset >= end
                    }
                }
            };
            let next = next_offset.min(end);
            if keys.len() >= BATCH_RECORDS || (reached_end && next > applied_up_to) {
                let batch = keys.iter().zip(values.iter());
                store.apply_changelog(
                    id,
                    batch.map(|(k, v)| (&k[..], v.as_deref())),
                    next as u64,
                )?;
                applied_up_to = next;
                keys.clear();
                values.clear();
                progress.restored.store(records, Ordering::Relaxed);
            }
            if reached_end {
                return Ok((records, held_back, next as u64));
            }
            let waited = last_advance.elapsed();
            if waited >= Duration::from_secs(1) {
                if last_wait_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                    last_wait_log = Some(Instant::now());
                    // A read_committed listing ends at the last stable offset: the first
                    // record of the oldest open transaction.
                    let stable = self
                        .consumer
                        .fetch_watermarks(topic, partition, SLICE)
                        .map(|(_, stable)| stable)
                        .unwrap_or(next_offset);
                    progress.waiting_at.store(stable, Ordering::Relaxed);
                    tracing::info!(
                        topic = %topic,
                        partition,
                        open_since = stable,
                        position = next_offset,
                        end,
                        waited_s = waited.as_secs(),
                        bound_s = self.open_transaction_wait.as_secs(),
                        last_error = last_error.as_deref().unwrap_or("none"),
                        "restore stands short of the changelog's end: waiting for the transaction open since this offset to be committed or aborted (or for the broker)"
                    );
                }
                if waited >= self.open_transaction_wait {
                    return Err(RestoreError::Stuck {
                        topic: topic.to_owned(),
                        partition,
                        position: next_offset,
                        stable: progress.waiting_at.load(Ordering::Relaxed),
                        end,
                        waited,
                        last_error: last_error.unwrap_or_else(|| "none".into()),
                    });
                }
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                tracing::info!(
                    topic = %topic,
                    partition,
                    restored = records,
                    total = end - start,
                    "restoring"
                );
            }
        }
    }
}

/// Consumer errors librdkafka recovers from by itself (it reconnects, refreshes metadata and
/// fetches again).
fn is_transient(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let KafkaError::MessageConsumption(code) = error else {
        return false;
    };
    matches!(
        code,
        Code::BrokerTransportFailure
            | Code::AllBrokersDown
            | Code::OperationTimedOut
            | Code::RequestTimedOut
            | Code::NetworkException
            | Code::NotLeaderForPartition
            | Code::LeaderNotAvailable
            | Code::FencedLeaderEpoch
            | Code::UnknownLeaderEpoch
            | Code::OffsetNotAvailable
            | Code::Resolve
    )
}

/// Calls a broker request with a short timeout until it answers, the overall
/// [`WATERMARK_TIMEOUT`] passes, or the caller cancels.
pub fn retry_sliced<T>(
    cancel: &dyn Cancel,
    mut call: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, RestoreError> {
    let deadline = Instant::now() + WATERMARK_TIMEOUT;
    loop {
        if cancel.cancelled() {
            return Err(RestoreError::Cancelled);
        }
        match call() {
            Ok(value) => return Ok(value),
            // Timeouts, a coordinator that moves, a leader election: all pass within the
            // deadline or are worth reporting after it.
            Err(error) if Instant::now() >= deadline => return Err(error.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
