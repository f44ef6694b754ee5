//! One partition's store opened and restored on its own thread, so the stream thread keeps
//! processing its other partitions meanwhile.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{Config, Guarantee};
use crate::engine::application::Application;
use crate::engine::store::restore::{
    retry_sliced, Cancel, RestoreError, RestoreLimits, RestoreProgress, RestoreReport, Restorer,
};
use crate::engine::store::{partition_dir, OpenFailure, Store};
use crate::kafka::Reader;
use crate::telemetry::Metrics;

use super::assignment::Restored;

/// How long a store's lock may be held elsewhere (a closing handle of this process, a
/// restore that was cancelled) before the task gives up; never a reason to delete the store.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// KAFKA-20416: a coordinator that is moving may answer "no committed offset" for a group that
/// has one. A store that holds state while the group says "no offset" asks again for this long.
const NO_OFFSET_RECHECK: Duration = Duration::from_secs(30);

/// Opens a partition's store and restores it, on its own thread.
pub(super) struct RestoreJob {
    pub(super) config: Arc<Config>,
    pub(super) app: Arc<dyn Application>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) ends: Arc<Reader>,
    pub(super) partition: i32,
    pub(super) generation: u64,
    pub(super) progress: Arc<RestoreProgress>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) done: mpsc::Sender<Restored>,
}

impl RestoreJob {
    pub(super) fn run(self) {
        // The reader is created first, so it connects while the store opens.
        let (result, restorer) = match Restorer::new(&self.config, self.ends.clone()) {
            Ok(restorer) => (self.restore(&restorer), Some(restorer)),
            Err(error) => (Err(error.into()), None),
        };
        let _ = self.done.send(Restored {
            partition: self.partition,
            generation: self.generation,
            result,
        });
        // Only now: destroying a librdkafka client takes ~100 ms.
        drop(restorer);
    }

    fn restore(&self, restorer: &Restorer) -> Result<(Store, Offset, RestoreReport), RestoreError> {
        let path = partition_dir(
            &self.config.state_dir,
            &self.config.application_id,
            self.partition,
        );
        let started = Instant::now();
        let mut store = self.open_or_rebuild(&path)?;
        let opened = started.elapsed();
        let cancel: &dyn Cancel = &*self.cancel;
        // At least once, the output of input past the committed offset may never have been
        // delivered, so the state of that input is not restored: the task folds it again.
        let mut limits = RestoreLimits::default();
        let mut committed = None;
        if self.config.guarantee == Guarantee::AtLeastOnce {
            let offset = self.committed_offset(restorer, &store)?;
            if let Offset::Offset(o) = offset {
                limits.replay_from = Some(o);
            }
            committed = Some(offset);
        }
        let mut report = match restorer.restore_with(
            &store,
            self.partition,
            limits.clone(),
            &self.progress,
            cancel,
        ) {
            Err(RestoreError::CheckpointAhead {
                checkpoint, end, ..
            }) => {
                tracing::warn!(
                    partition = self.partition,
                    path = %path.display(),
                    checkpoint,
                    end,
                    "store checkpoint is beyond the true end of the changelog (was the topic recreated?); rebuilding the store"
                );
                Metrics::inc(&self.metrics.stores_rebuilt);
                drop(store);
                Store::wipe(&path)?;
                store = Store::open(&path, self.app.stores())?;
                restorer.restore_with(
                    &store,
                    self.partition,
                    limits.clone(),
                    &self.progress,
                    cancel,
                )?
            }
            other => other?,
        };
        let caught_up = started.elapsed();
        // Under exactly-once the committed offset is read with require_stable (librdkafka does
        // so under read_committed): it waits for a previous owner's pending transaction. That
        // transaction may have added changelog records, so catch up once more after it.
        let committed = match committed {
            Some(offset) => offset,
            None => self.committed_offset(restorer, &store)?,
        };
        let stable = started.elapsed();
        let tail = restorer.restore_with(&store, self.partition, limits, &self.progress, cancel)?;
        tracing::debug!(
            partition = self.partition,
            opened = ?opened,
            caught_up = ?caught_up,
            stable = ?stable,
            done = ?started.elapsed(),
            "restore timeline"
        );
        report.records += tail.records;
        report.held_back += tail.held_back;
        report.checkpoint = tail.checkpoint;
        if report.held_back > 0 {
            Metrics::add(&self.metrics.records_reprocessed, report.held_back);
            tracing::info!(
                partition = self.partition,
                records = report.held_back,
                from = ?committed,
                "at least once: changelog states past the committed input offset not restored; that input is folded again and its output may repeat"
            );
        }
        Ok((store, committed, report))
    }

    /// The group's committed input offset for the partition, as an absolute offset.
    fn committed_offset(&self, restorer: &Restorer, store: &Store) -> Result<Offset, RestoreError> {
        let cancel: &dyn Cancel = &*self.cancel;
        let input = &self.config.topics.input;
        let started = Instant::now();
        let committed = loop {
            let mut wanted = TopicPartitionList::new();
            wanted.add_partition(input, self.partition);
            let offset = retry_sliced(cancel, || {
                restorer
                    .consumer()
                    .committed_offsets(wanted.clone(), Duration::from_secs(1))
            })?
            .elements()
            .first()
            .map(|e| e.offset())
            .unwrap_or(Offset::Invalid);
            if matches!(offset, Offset::Offset(_)) {
                break offset;
            }
            // Only a missing offset needs the store's opinion.
            if !store.has_data()? {
                break offset;
            }
            if started.elapsed() >= NO_OFFSET_RECHECK {
                tracing::warn!(
                    partition = self.partition,
                    "the group has no committed offset for a partition whose store holds state; starting from the beginning (replayed input is skipped by each key's last offset)"
                );
                break offset;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        Ok(match committed {
            Offset::Offset(o) => Offset::Offset(o),
            // Seeking to the logical BEGINNING and resuming right after made librdkafka drop
            // its own offset lookup as outdated and retry it on a 500 ms timer: every fresh
            // start processed nothing for half a second. An absolute offset needs no lookup.
            _ => {
                let (low, _) = restorer.true_end(input, self.partition, cancel)?;
                Offset::Offset(low)
            }
        })
    }

    /// Opens the store. Only a store RocksDB reports as corrupt is wiped (and rebuilt from the
    /// changelog); a lock held elsewhere is waited out, and resource errors (descriptors,
    /// permissions, a full disk) fail the task with the path and the cause.
    fn open_or_rebuild(&self, path: &std::path::Path) -> Result<Store, RestoreError> {
        let started = Instant::now();
        loop {
            if self.cancel.cancelled() {
                return Err(RestoreError::Cancelled);
            }
            let error = match Store::open(path, self.app.stores()) {
                Ok(store) => return Ok(store),
                Err(error) => error,
            };
            match error.open_failure() {
                Some(OpenFailure::Locked) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(OpenFailure::Corrupt) => {
                    tracing::warn!(partition = self.partition, path = %path.display(), %error, cause = ?std::error::Error::source(&error).map(|s| s.to_string()), "state store is corrupt, rebuilding it from the changelog");
                    Metrics::inc(&self.metrics.stores_rebuilt);
                    Store::wipe(path)?;
                    return Ok(Store::open(path, self.app.stores())?);
                }
                _ => return Err(error.into()),
            }
        }
    }
}
