//! One task per assigned input partition: its store, the uncommitted overlay, and the input
//! offset it has reached inside the open transaction.
//!
//! The overlay is what keeps RocksDB free of uncommitted data: the fold reads the overlay
//! first, then the store; after Kafka commits, the overlay goes to RocksDB in one batch with
//! the changelog checkpoint; on abort it is simply dropped. The window store works the same
//! way beside it ([`windows`]), in the same transaction and the same RocksDB batch.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::sink::{InputRecord, Sink};
use crate::engine::store::{Change, Store, StoreError};
use crate::hello::domain::{self, HelloState, Outcome, Provenance};
use crate::hello::window_task::{WindowTask, Windowed};
use crate::hello::windows::WindowSpec;
use crate::kafka::producer::ProducerError;
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
    windows: Option<WindowTask>,
}

impl Task {
    pub fn new(
        partition: i32,
        store: Arc<Store>,
        max_value_bytes: usize,
        windows: Option<WindowSpec>,
    ) -> Result<Self, TaskError> {
        let windows = match windows {
            Some(spec) => Some(WindowTask::new(spec, partition, store.clone())?),
            None => None,
        };
        Ok(Task {
            partition,
            store,
            overlay: HashMap::new(),
            overlay_epoch: None,
            pending_offset: None,
            max_value_bytes,
            windows,
        })
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
        if let Some(windows) = &mut self.windows {
            if windows.process(record, key, outcome, sink)? == Windowed::Late {
                work.dead_lettered += 1;
                work.late += 1;
            }
        }
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

    /// Last writes of the open transaction, just before it commits (closed and expired
    /// windows, the stream clock).
    pub fn before_commit(&mut self, sink: &Sink) -> Result<(), TaskError> {
        match &mut self.windows {
            Some(windows) => windows.before_commit(sink),
            None => Ok(()),
        }
    }

    /// Writes the overlays to RocksDB after Kafka committed them. `checkpoint` and
    /// `windows_checkpoint` are each changelog's offset after this transaction's last record
    /// for the partition (`None`: the transaction wrote none there).
    pub fn committed(
        &mut self,
        checkpoint: Option<u64>,
        windows_checkpoint: Option<u64>,
    ) -> Result<(), TaskError> {
        let windows = self.windows.as_ref().map(|w| w.commit(windows_checkpoint));
        let windows_changed = windows
            .as_ref()
            .is_some_and(|w| w.checkpoint.is_some() || w.clock.is_some());
        if checkpoint.is_some() || windows_changed {
            let changes = self.overlay.iter().map(|(key, state)| Change {
                key: key.as_bytes(),
                state,
            });
            self.store
                .commit_with(changes, self.overlay_epoch, checkpoint, windows.as_ref())?;
        }
        drop(windows);
        if let Some(windows) = &mut self.windows {
            windows.committed();
        }
        self.clear();
        Ok(())
    }

    /// Drops the uncommitted work (abort). Also after a recovery caught the store up with
    /// the changelogs, so the stream clock is read from the store again.
    pub fn rollback(&mut self) -> Result<(), TaskError> {
        self.clear();
        if let Some(windows) = &mut self.windows {
            windows.rollback()?;
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.overlay.clear();
        self.overlay_epoch = None;
        self.pending_offset = None;
    }
}
