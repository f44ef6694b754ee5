//! Rebuilding a partition's store from its changelog.
//!
//! A restore reads the changelog partition `read_committed` from the store's checkpoint to the
//! end and writes it in large batches, each carrying the new checkpoint, so an interrupted
//! restore resumes where it stopped. The end of a transactional partition is where the
//! consumer reports end-of-partition: its last offset may be a commit marker, which carries no
//! record, so comparing record offsets with the high watermark would wait forever.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::kafka::{Reader, ReaderContext};

use super::{Store, StoreError};

const BATCH_RECORDS: usize = 20_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog read failed")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "checkpoint {checkpoint} is ahead of the changelog end {end} of {topic} [{partition}]"
    )]
    CheckpointAhead {
        topic: String,
        partition: i32,
        checkpoint: u64,
        end: i64,
    },
    #[error("restore cancelled")]
    Cancelled,
}

/// Progress of one restore, shared with the query servers (503 with progress) and logs.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub restored: AtomicU64,
    pub total: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    pub records: u64,
    pub elapsed: Duration,
    pub checkpoint: u64,
}

/// Reads changelog partitions into stores.
pub struct Restorer {
    consumer: Reader,
    topic: String,
}

impl Restorer {
    /// `config` comes from [`crate::kafka::reader_config`].
    pub fn new(config: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        Ok(Restorer {
            consumer: config.create_with_context(ReaderContext)?,
            topic: topic.to_owned(),
        })
    }

    pub fn consumer(&self) -> &Reader {
        &self.consumer
    }

    /// Brings `store` up to the end of changelog `partition`.
    pub fn restore(
        &self,
        store: &Store,
        partition: i32,
        progress: &RestoreProgress,
        cancel: &AtomicBool,
    ) -> Result<RestoreReport, RestoreError> {
        self.restore_to(store, partition, None, progress, cancel)
    }

    /// Like [`Restorer::restore`], but stops before changelog offset `limit` when given (the
    /// drill rebuilds exactly the state a store's checkpoint reflects).
    pub fn restore_to(
        &self,
        store: &Store,
        partition: i32,
        limit: Option<u64>,
        progress: &RestoreProgress,
        cancel: &AtomicBool,
    ) -> Result<RestoreReport, RestoreError> {
        let started = Instant::now();
        let (low, mut high) =
            self.consumer
                .fetch_watermarks(&self.topic, partition, WATERMARK_TIMEOUT)?;
        if let Some(limit) = limit {
            high = high.min(limit as i64);
        }
        let checkpoint = store.checkpoint()?.unwrap_or(0);
        if checkpoint as i64 > high {
            return Err(RestoreError::CheckpointAhead {
                topic: self.topic.clone(),
                partition,
                checkpoint,
                end: high,
            });
        }
        let start = (checkpoint as i64).max(low);
        progress
            .total
            .store((high - start).max(0) as u64, Ordering::Relaxed);
        progress.restored.store(0, Ordering::Relaxed);
        if start >= high {
            return Ok(RestoreReport {
                records: 0,
                elapsed: started.elapsed(),
                checkpoint,
            });
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(start))?;
        self.consumer.assign(&assignment)?;

        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(BATCH_RECORDS);
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(BATCH_RECORDS);
        let mut next_offset = start as u64;
        let mut records = 0u64;
        let mut last_progress = Instant::now();
        let result = loop {
            if cancel.load(Ordering::Relaxed) {
                break Err(RestoreError::Cancelled);
            }
            let reached_end = match self.consumer.poll(Duration::from_millis(100)) {
                None => false,
                Some(Err(KafkaError::PartitionEOF(_))) => true,
                Some(Err(error)) => break Err(error.into()),
                Some(Ok(message)) => {
                    // A compacted-away key or a tombstone carries no value: nothing to restore.
                    if let (Some(key), Some(value)) = (message.key(), message.payload()) {
                        keys.push(key.to_vec());
                        values.push(value.to_vec());
                    }
                    next_offset = message.offset() as u64 + 1;
                    records += 1;
                    next_offset as i64 >= high
                }
            };
            let reached_end = reached_end || (limit.is_some() && next_offset as i64 >= high);
            if keys.len() >= BATCH_RECORDS || (reached_end && next_offset > checkpoint) {
                let batch = keys
                    .iter()
                    .zip(values.iter())
                    .map(|(k, v)| (&k[..], &v[..]));
                store.apply_changelog(batch, next_offset)?;
                keys.clear();
                values.clear();
                progress.restored.store(records, Ordering::Relaxed);
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                tracing::info!(
                    topic = %self.topic,
                    partition,
                    restored = records,
                    total = high - start,
                    "restoring"
                );
            }
            if reached_end {
                break Ok(RestoreReport {
                    records,
                    elapsed: started.elapsed(),
                    checkpoint: next_offset,
                });
            }
        };
        self.consumer.unassign()?;
        result
    }
}
