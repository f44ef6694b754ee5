//! Partitions coming and going: the rebalance callbacks' side of the stream thread. An
//! assigned partition is paused, queued for a restore slot, restored on its own thread
//! ([`super::restore_job`]) and activated when the restore is the one still wanted; a revoked
//! one commits (or aborts) and closes only its own task.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use crate::engine::store::restore::{RestoreError, RestoreProgress, RestoreReport};
use crate::engine::store::{Store, StoreError};
use crate::engine::task::Task;
use crate::kafka::consumer::GroupConsumer;
use crate::liveness::Activity;
use crate::telemetry::Metrics;

use super::restore_job::RestoreJob;
use super::{seek, Engine, Failure, ProcessorError};

/// A restore that finished on its thread; the stream thread activates the task if the
/// restore is still the one it started for the partition.
pub(super) struct Restored {
    pub(super) partition: i32,
    pub(super) generation: u64,
    pub(super) result: Result<(Store, Offset, RestoreReport), RestoreError>,
}

/// An assigned partition waiting for a restore slot, or for its retry after a failed restore.
pub(super) struct Queued {
    pub(super) partition: i32,
    pub(super) progress: Arc<RestoreProgress>,
    pub(super) not_before: Instant,
}

/// A failed restore whose cause is the broker (unreachable, no leader, a request that timed
/// out) is tried again after this, while the partition stays assigned; the stall watchdog
/// reports it if it goes on.
pub(super) const RESTORE_RETRY: Duration = Duration::from_secs(1);

/// A restore running on its own thread. `generation` tells it apart from an earlier restore of
/// the same partition that was revoked and whose result may still arrive.
pub(super) struct Restoring {
    pub(super) generation: u64,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) thread: JoinHandle<()>,
}

impl Engine {
    pub(super) fn revoke(
        &mut self,
        consumer: &GroupConsumer,
        partitions: &[i32],
        lost: bool,
    ) -> Result<(), ProcessorError> {
        Metrics::inc(&self.thread_metrics().rebalances);
        tracing::info!(
            thread = self.thread,
            ?partitions,
            lost,
            "partitions revoked"
        );
        self.liveness.doing(self.thread, Activity::Rebalancing);
        if self.in_txn {
            if lost {
                // Another instance may already own them: committing their offsets would fail
                // the generation check anyway, so give up the whole transaction.
                self.recover(consumer, Failure::Aborted)?;
            } else {
                self.commit(consumer)?;
            }
        }
        for partition in partitions {
            // Not joined: the restore may be inside a broker request; it notices the cancel
            // within a second, and its result, if any, no longer matches a generation.
            if let Some(restoring) = self.restoring.remove(partition) {
                restoring
                    .cancel
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.finishing.push(restoring.thread);
            }
            self.queued.retain(|q| q.partition != *partition);
            self.local.remove(*partition);
            if let Some(task) = self.tasks.remove(partition) {
                if let Err(error) = task.store().flush() {
                    tracing::warn!(%error, partition, "flush on close failed");
                }
            }
        }
        Ok(())
    }

    pub(super) fn assign(
        &mut self,
        consumer: &GroupConsumer,
        partitions: &[i32],
    ) -> Result<(), ProcessorError> {
        Metrics::inc(&self.thread_metrics().rebalances);
        tracing::info!(thread = self.thread, ?partitions, "partitions assigned");
        let mut paused = TopicPartitionList::new();
        for partition in partitions {
            paused.add_partition(&self.config.topics.input, *partition);
        }
        // Nothing is processed for a partition before its store caught up with the changelog.
        consumer.pause(&paused)?;
        for &partition in partitions {
            let progress = Arc::new(RestoreProgress::default());
            self.local.set_restoring(partition, progress.clone());
            self.queued.push_back(Queued {
                partition,
                progress,
                not_before: Instant::now(),
            });
        }
        // After the restoring views exist, so readiness never flickers on in between.
        self.local.set_joined(self.thread);
        self.start_restores()
    }

    /// Starts queued restores while fewer than `app.max_concurrent_restores` run.
    pub(super) fn start_restores(&mut self) -> Result<(), ProcessorError> {
        while self.restoring.len() < self.config.max_concurrent_restores {
            let now = Instant::now();
            let Some(at) = self.queued.iter().position(|q| q.not_before <= now) else {
                break;
            };
            let Some(Queued {
                partition,
                progress,
                ..
            }) = self.queued.remove(at)
            else {
                break;
            };
            self.generation += 1;
            let cancel = Arc::new(AtomicBool::new(false));
            let job = RestoreJob {
                config: self.config.clone(),
                app: self.app.clone(),
                metrics: self.metrics.clone(),
                ends: self.ends.clone(),
                partition,
                generation: self.generation,
                progress,
                cancel: cancel.clone(),
                done: self.restored_tx.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("restore-{partition}"))
                .spawn(move || job.run())
                .map_err(|e| {
                    ProcessorError::Store(StoreError::CreateDir {
                        path: "restore thread".into(),
                        source: e,
                    })
                })?;
            self.restoring.insert(
                partition,
                Restoring {
                    generation: self.generation,
                    cancel,
                    thread,
                },
            );
        }
        Ok(())
    }

    fn reap_finished_restores(&mut self) {
        let (done, running) = std::mem::take(&mut self.finishing)
            .into_iter()
            .partition(|thread| thread.is_finished());
        self.finishing = running;
        for thread in done {
            let _ = thread.join();
        }
    }

    pub(super) fn activate(
        &mut self,
        consumer: &GroupConsumer,
        done: Restored,
    ) -> Result<(), ProcessorError> {
        if self
            .restoring
            .get(&done.partition)
            .is_none_or(|r| r.generation != done.generation)
        {
            // Revoked while restoring (and maybe assigned again since): not this store.
            return Ok(());
        }
        let Some(restoring) = self.restoring.remove(&done.partition) else {
            return Ok(());
        };
        // Not joined here: closing the thread's reader takes librdkafka ~100 ms, which
        // would delay this partition's activation (and every later one).
        self.finishing.push(restoring.thread);
        self.reap_finished_restores();
        self.start_restores()?;
        let (store, committed, report) = match done.result {
            Ok(restored) => restored,
            Err(error @ (RestoreError::Kafka(_) | RestoreError::Stuck { .. })) => {
                tracing::warn!(
                    partition = done.partition,
                    error = %error,
                    cause = ?std::error::Error::source(&error).map(|s| s.to_string()),
                    retry_in = ?RESTORE_RETRY,
                    "restore failed, trying again"
                );
                let progress = Arc::new(RestoreProgress::default());
                self.local.set_restoring(done.partition, progress.clone());
                self.queued.push_back(Queued {
                    partition: done.partition,
                    progress,
                    not_before: Instant::now() + RESTORE_RETRY,
                });
                return Ok(());
            }
            Err(source) => {
                return Err(ProcessorError::Restore {
                    partition: done.partition,
                    source,
                })
            }
        };
        self.metrics.restored(report.records, report.elapsed);
        tracing::info!(
            partition = done.partition,
            records = report.records,
            seconds = report.elapsed.as_secs_f64(),
            "partition restored"
        );
        let store = Arc::new(store.with_read_cache(self.cache_entries_per_store));
        let mut position = TopicPartitionList::new();
        position.add_partition_offset(&self.config.topics.input, done.partition, committed)?;
        seek(consumer, position.clone())?;
        consumer.resume(&position)?;
        let processor = self.app.processor(done.partition, &store)?;
        let task = Task::new(done.partition, store.clone(), processor);
        self.tasks.insert(done.partition, task);
        self.local.set_active(done.partition, store);
        if let Offset::Offset(position) = committed {
            self.local.set_position(done.partition, position);
        }
        if let Some(announcer) = &self.announcer {
            announcer.announce(done.partition);
        }
        Ok(())
    }
}
