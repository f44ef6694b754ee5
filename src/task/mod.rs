//! One task per assigned input partition: its store, the uncommitted overlay, and the input
//! offset it has reached inside the open transaction.
//!
//! The overlay is what keeps RocksDB free of uncommitted data: the fold reads the overlay
//! first, then the store; after Kafka commits, the overlay goes to RocksDB in one batch with
//! the changelog checkpoint; on abort it is simply dropped.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{self, HelloState, Outcome, Provenance};
use crate::kafka::producer::ProducerError;
use crate::sink::{InputRecord, Sink};
use crate::store::{Change, Store, StoreError};
use crate::telemetry::Uncommitted;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Produce(#[from] ProducerError),
}

/// What processing a record did, for the caller's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    Applied(Outcome),
    DeadLettered,
    /// At or below the key's last applied offset: a replay after an at-least-once crash.
    Replayed,
}

pub struct Task {
    pub partition: i32,
    store: Arc<Store>,
    overlay: HashMap<Box<str>, HelloState>,
    /// A punctuation in the open transaction.
    overlay_epoch: Option<u64>,
    /// Offset after the last record processed in the open transaction.
    pending_offset: Option<i64>,
    max_value_bytes: usize,
}

impl Task {
    pub fn new(partition: i32, store: Arc<Store>, max_value_bytes: usize) -> Self {
        Task {
            partition,
            store,
            overlay: HashMap::new(),
            overlay_epoch: None,
            pending_offset: None,
            max_value_bytes,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn epoch(&self) -> u64 {
        self.overlay_epoch.unwrap_or_else(|| self.store.epoch())
    }

    /// The input offset to commit for this partition, if the open transaction moved it.
    pub fn pending_offset(&self) -> Option<i64> {
        self.pending_offset
    }

    pub fn has_pending_work(&self) -> bool {
        self.pending_offset.is_some() || self.overlay_epoch.is_some()
    }

    pub fn process(
        &mut self,
        record: &InputRecord<'_>,
        sink: &Sink,
        work: &mut Uncommitted,
        now_ms: i64,
    ) -> Result<Processed, TaskError> {
        self.pending_offset = Some(record.offset + 1);
        let decoded = domain::validate_key(record.key).and_then(|key| {
            domain::decode_event(record.value, self.max_value_bytes).map(|event| (key, event))
        });
        let (key, event) = match decoded {
            Ok(decoded) => decoded,
            Err(poison) => {
                sink.dead_letter(record, &poison)?;
                work.dead_lettered += 1;
                return Ok(Processed::DeadLettered);
            }
        };
        let previous = match self.overlay.get(key) {
            Some(state) => Some(*state),
            None => self.store.get_raw(key.as_bytes())?,
        };
        if previous.is_some_and(|p| p.last_offset >= record.offset) {
            work.skipped_replayed += 1;
            return Ok(Processed::Replayed);
        }
        let at = Provenance {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
        };
        let (state, outcome) = domain::fold(previous, self.epoch(), &event, at);
        sink.changelog(self.partition, key.as_bytes(), &state)?;
        #[cfg(feature = "fault-hooks")]
        crate::fault::after_changelog(|| sink.producer().close());
        sink.count_updated(record, key, &state, outcome, now_ms)?;
        if outcome == Outcome::Counted {
            work.counted += 1;
        }
        self.overlay.insert(key.into(), state);
        Ok(Processed::Applied(outcome))
    }

    /// Resets every count by moving the partition to the next epoch: one changelog record,
    /// whatever the number of keys.
    pub fn punctuate(&mut self, sink: &Sink) -> Result<(), TaskError> {
        let next = self.epoch() + 1;
        sink.epoch(self.partition, next)?;
        self.overlay_epoch = Some(next);
        Ok(())
    }

    /// Writes the overlay to RocksDB after Kafka committed it. `checkpoint` is the changelog
    /// offset after this transaction's last record for the partition.
    pub fn committed(&mut self, checkpoint: Option<u64>) -> Result<(), TaskError> {
        if let Some(checkpoint) = checkpoint {
            let changes = self.overlay.iter().map(|(key, state)| Change {
                key: key.as_bytes(),
                state,
            });
            self.store.commit(changes, self.overlay_epoch, checkpoint)?;
        }
        self.clear();
        Ok(())
    }

    /// Drops the uncommitted work (abort).
    pub fn rollback(&mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        self.overlay.clear();
        self.overlay_epoch = None;
        self.pending_offset = None;
    }
}
