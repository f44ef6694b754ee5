//! The stream thread: poll input, hand records to tasks, commit every interval, and react to
//! rebalances and failures. A plain OS thread, like Kafka Streams' StreamThread: every Kafka
//! call on this path blocks, and none of it belongs on the async runtime.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{Config, Guarantee};
use crate::kafka::admin::Layout;
use crate::kafka::consumer::{self, GroupConsumer, Rebalancer};
use crate::kafka::producer::{CommitError, DeliveryTracker, Producer, ProducerError};
use crate::kafka::{create_end_reader, Reader};
use crate::liveness::{Activity, Liveness};
use crate::ownership::Announcer;
use crate::query::local::LocalState;
use crate::shutdown::Shutdown;
use crate::sink::{InputRecord, Sink, WINDOWS_CHANGELOG};
use crate::store::restore::{
    retry_sliced, Cancel, RestoreError, RestoreLimits, RestoreProgress, RestoreReport, Restorer,
};
use crate::store::{partition_dir, OpenFailure, Store, StoreError};
use crate::task::{Task, TaskError};
use crate::telemetry::{Metrics, ThreadMetrics, Uncommitted};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka client failed")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("restore of partition {partition} failed")]
    Restore {
        partition: i32,
        #[source]
        source: RestoreError,
    },
}

impl From<TaskError> for ProcessorError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::Store(e) => ProcessorError::Store(e),
            TaskError::Produce(e) => ProcessorError::Producer(e),
        }
    }
}

/// Everything the stream thread needs; built by the daemon.
pub struct Setup {
    pub config: Arc<Config>,
    pub layout: Layout,
    pub instance_id: String,
    /// Which of the instance's stream threads this is, from 0.
    pub thread: usize,
    pub local: Arc<LocalState>,
    pub metrics: Arc<Metrics>,
    pub announcer: Option<Arc<Announcer>>,
    pub liveness: Arc<Liveness>,
}

/// Runs the stream thread until shutdown. Returns after the final commit.
pub fn run(setup: Setup, shutdown: Shutdown) -> Result<(), ProcessorError> {
    let (restored_tx, restored_rx) = mpsc::channel();
    // Joining the group and the producer's init_transactions are each a few round trips;
    // librdkafka joins in the background, so subscribing first runs them side by side.
    let hooks = Arc::new(Hooks::default());
    let consumer = consumer::create(&setup.config, setup.thread, hooks.clone())?;
    consumer.subscribe(&[&setup.config.topics.input])?;
    let engine = Arc::new(Mutex::new(Engine::new(
        setup,
        restored_tx,
        shutdown.clone(),
    )?));
    let _ = hooks.0.set(engine.clone());
    lock(&engine).local.set_running(true);
    let result = poll_loop(&engine, &consumer, &restored_rx, &shutdown);
    let closed = lock(&engine).close(&consumer);
    // Leaving the group runs the revoke callback, which finds no tasks left.
    consumer.unsubscribe();
    drop(consumer);
    lock(&engine).local.set_running(false);
    result.and(closed)
}

fn lock(engine: &Mutex<Engine>) -> MutexGuard<'_, Engine> {
    // A panic on the stream thread ends the daemon anyway; keep going on a poisoned lock.
    engine.lock().unwrap_or_else(|e| e.into_inner())
}

fn poll_loop(
    engine: &Mutex<Engine>,
    consumer: &GroupConsumer,
    restored: &mpsc::Receiver<Restored>,
    shutdown: &Shutdown,
) -> Result<(), ProcessorError> {
    const MAX_BATCH: usize = 5_000;
    while !shutdown.is_triggered() {
        activate_restored(engine, consumer, restored)?;
        let (wait, restoring) = {
            let engine = lock(engine);
            // Back in the loop: whatever the last step was (a rebalance callback) is over.
            engine.liveness.doing(engine.thread, Activity::Polling);
            (engine.time_to_next_deadline(), !engine.restoring.is_empty())
        };
        // A finished restore is only picked up between polls, and while partitions restore
        // there is little to poll (they are paused): poll briefly so activation is prompt.
        let most = Duration::from_millis(if restoring { 5 } else { 50 });
        let mut timeout = wait.min(most);
        // Whether the batch ended because nothing more was waiting, not at MAX_BATCH.
        let mut drained = false;
        for n in 0..MAX_BATCH {
            // Partitions that finished restoring start at once, not after a full batch of
            // the ones already running.
            if restoring && n % 256 == 255 {
                activate_restored(engine, consumer, restored)?;
            }
            // The engine is locked per record, never across `poll`: poll may run the
            // rebalance callbacks, which lock it too.
            let Some(next) = consumer.poll(timeout) else {
                drained = true;
                break;
            };
            timeout = Duration::ZERO;
            match next {
                Ok(message) => {
                    let record = InputRecord {
                        topic: message.topic(),
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                        key: message.key(),
                        value: message.payload(),
                    };
                    lock(engine).process(consumer, &record)?;
                }
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(error) => tracing::warn!(%error, "consumer error"),
            }
        }
        let mut engine = lock(engine);
        engine.maybe_punctuate(consumer)?;
        engine.maybe_commit(consumer, drained)?;
        engine.observe(consumer);
        if let Some(error) = engine.failed.take() {
            return Err(error);
        }
    }
    Ok(())
}

fn activate_restored(
    engine: &Mutex<Engine>,
    consumer: &GroupConsumer,
    restored: &mpsc::Receiver<Restored>,
) -> Result<(), ProcessorError> {
    while let Ok(done) = restored.try_recv() {
        lock(engine).activate(consumer, done)?;
    }
    Ok(())
}

/// The rebalance callbacks' way to the engine, which is built after the consumer subscribed.
/// librdkafka runs the callbacks only inside `poll`, and the first poll comes after the engine
/// is set.
#[derive(Default)]
struct Hooks(OnceLock<Arc<Mutex<Engine>>>);

impl Rebalancer for Hooks {
    fn revoke(&self, consumer: &GroupConsumer, partitions: &[i32], lost: bool) {
        let Some(engine) = self.0.get() else { return };
        let mut engine = lock(engine);
        if let Err(error) = engine.revoke(consumer, partitions, lost) {
            engine.failed.get_or_insert(error);
        }
    }

    fn assign(&self, consumer: &GroupConsumer, partitions: &[i32]) {
        let Some(engine) = self.0.get() else { return };
        let mut engine = lock(engine);
        if let Err(error) = engine.assign(consumer, partitions) {
            engine.failed.get_or_insert(error);
        }
    }
}

/// A restore that finished on its thread; the stream thread activates the task if the
/// restore is still the one it started for the partition.
struct Restored {
    partition: i32,
    generation: u64,
    result: Result<(Store, Offset, RestoreReport), RestoreError>,
}

/// A restore running on its own thread. `generation` tells it apart from an earlier restore of
/// the same partition that was revoked and whose result may still arrive.
/// An assigned partition waiting for a restore slot, or for its retry after a failed restore.
struct Queued {
    partition: i32,
    progress: Arc<RestoreProgress>,
    not_before: Instant,
}

/// A failed restore whose cause is the broker (unreachable, no leader, a request that timed
/// out) is tried again after this, while the partition stays assigned; the stall watchdog
/// reports it if it goes on.
const RESTORE_RETRY: Duration = Duration::from_secs(1);

struct Restoring {
    generation: u64,
    cancel: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Engine {
    config: Arc<Config>,
    instance_id: String,
    thread: usize,
    sink: Sink,
    tasks: BTreeMap<i32, Task>,
    restoring: HashMap<i32, Restoring>,
    /// Assigned partitions waiting for a restore slot (`app.max_concurrent_restores`).
    queued: VecDeque<Queued>,
    generation: u64,
    /// Restore threads whose result is in, or that were cancelled; they are still closing
    /// their changelog reader or noticing the cancel.
    finishing: Vec<JoinHandle<()>>,
    /// Asks partition ends as a read_uncommitted reader sees them; shared by the restores.
    ends: Arc<Reader>,
    shutdown: Shutdown,
    restored_tx: mpsc::Sender<Restored>,
    local: Arc<LocalState>,
    metrics: Arc<Metrics>,
    /// What the open transaction did, for the metrics once it commits.
    uncommitted: Uncommitted,
    announcer: Option<Arc<Announcer>>,
    liveness: Arc<Liveness>,
    last_observed: Instant,
    /// A commit failed after shutdown began: close skips the delivery wait.
    failed_while_stopping: bool,
    /// The query cache budget (`query.cache_max_entries`) split over the input partitions.
    cache_entries_per_store: usize,
    in_txn: bool,
    txn_started: Instant,
    next_punctuation: Option<Instant>,
    /// An error raised inside a rebalance callback, surfaced by the poll loop.
    failed: Option<ProcessorError>,
}

/// One per stream thread, stable across restarts so a restarted thread fences its previous
/// incarnation at once. Thread 0 keeps the id of a single-threaded instance.
fn transactional_id(config: &Config, instance_id: &str, thread: usize) -> Option<String> {
    (config.guarantee == Guarantee::ExactlyOnce).then(|| match thread {
        0 => format!("{}-{}", config.application_id, instance_id),
        t => format!("{}-{}-{}", config.application_id, instance_id, t),
    })
}

fn producer_config(config: &Config) -> ClientConfig {
    let mut client = crate::kafka::client_config(config, &config.kafka.producer);
    client.set(
        "transaction.timeout.ms",
        config.kafka.transaction_timeout.as_millis().to_string(),
    );
    for (key, value) in &config.kafka.producer {
        client.set(key, value);
    }
    client
}

fn create_producer(
    config: &Config,
    instance_id: &str,
    thread: usize,
    partitions: i32,
) -> Result<Producer, ProducerError> {
    // The order sets the indexes: the window changelog is `sink::WINDOWS_CHANGELOG`.
    let tracker = DeliveryTracker::new(
        &[&config.topics.changelog, &config.topics.windows_changelog],
        partitions,
    );
    Producer::create(
        producer_config(config),
        transactional_id(config, instance_id, thread),
        tracker,
        KAFKA_TIMEOUT,
    )
}

impl Engine {
    fn new(
        setup: Setup,
        restored_tx: mpsc::Sender<Restored>,
        shutdown: Shutdown,
    ) -> Result<Engine, ProcessorError> {
        let producer = create_producer(
            &setup.config,
            &setup.instance_id,
            setup.thread,
            setup.layout.input,
        )?;
        let sink = Sink::new(producer, &setup.config, setup.layout);
        let cache_entries_per_store =
            setup.config.query.cache_max_entries / setup.layout.input.max(1) as usize;
        let ends = Arc::new(create_end_reader(&setup.config)?);
        Ok(Engine {
            queued: VecDeque::new(),
            generation: 0,
            ends,
            shutdown,
            next_punctuation: setup.config.reset_interval.map(|i| Instant::now() + i),
            cache_entries_per_store,
            config: setup.config,
            instance_id: setup.instance_id,
            thread: setup.thread,
            sink,
            tasks: BTreeMap::new(),
            restoring: HashMap::new(),
            finishing: Vec::new(),
            restored_tx,
            local: setup.local,
            metrics: setup.metrics,
            uncommitted: Uncommitted::default(),
            announcer: setup.announcer,
            liveness: setup.liveness,
            last_observed: Instant::now(),
            failed_while_stopping: false,
            in_txn: false,
            txn_started: Instant::now(),
            failed: None,
        })
    }

    fn time_to_next_deadline(&self) -> Duration {
        let now = Instant::now();
        let mut wait = Duration::from_millis(100);
        if self.in_txn {
            let due = self.txn_started + self.config.commit_interval;
            wait = wait.min(due.saturating_duration_since(now));
        }
        if let Some(at) = self.next_punctuation {
            wait = wait.min(at.saturating_duration_since(now));
        }
        wait
    }

    /// About twice a second: each active partition's lag (records between the consumer's
    /// position and the end the last fetch saw) for status and metrics, and whether the
    /// thread has anything to do; a thread with nothing to do is making progress.
    fn observe(&mut self, consumer: &GroupConsumer) {
        if self.last_observed.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_observed = Instant::now();
        // Restores waiting for their retry time.
        if let Err(error) = self.start_restores() {
            self.failed.get_or_insert(error);
        }
        let positions = consumer.position().unwrap_or_default();
        let mut behind = false;
        for &partition in self.tasks.keys() {
            let input = &self.config.topics.input;
            let position = positions
                .find_partition(input, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .or_else(|| self.local.position(partition));
            let end = cached_high_watermark(consumer, input, partition);
            if let (Some(position), Some(end)) = (position, end) {
                let lag = (end - position).max(0);
                self.local.set_lag(partition, lag);
                behind |= lag > 0;
            }
        }
        if !behind && !self.in_txn {
            self.liveness.progressed(self.thread);
        }
    }

    fn thread_metrics(&self) -> &ThreadMetrics {
        self.metrics.thread(self.thread)
    }

    fn begin_if_needed(&mut self) -> Result<(), ProcessorError> {
        if !self.in_txn {
            self.sink.producer().begin()?;
            self.in_txn = true;
            self.txn_started = Instant::now();
        }
        Ok(())
    }

    fn process(
        &mut self,
        consumer: &GroupConsumer,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessorError> {
        if !self.tasks.contains_key(&record.partition) {
            // Fetched before the partition was paused for its restore, or after revoke;
            // activation seeks back to the committed offset, so nothing is lost.
            return Ok(());
        }
        self.begin_if_needed()?;
        let now_ms = now_ms();
        let Some(task) = self.tasks.get_mut(&record.partition) else {
            return Ok(());
        };
        self.uncommitted.processed += 1;
        self.uncommitted.record_timestamp(record.timestamp_ms);
        match task.process(record, &self.sink, &mut self.uncommitted, now_ms) {
            Ok(_) => Ok(()),
            Err(TaskError::Produce(error)) => {
                tracing::warn!(error = %error, "produce failed, aborting the transaction");
                self.recover(consumer, Failure::Aborted)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn maybe_punctuate(&mut self, consumer: &GroupConsumer) -> Result<(), ProcessorError> {
        let (Some(at), Some(interval)) = (self.next_punctuation, self.config.reset_interval) else {
            return Ok(());
        };
        if Instant::now() < at {
            return Ok(());
        }
        self.next_punctuation = Some(at + interval);
        if self.tasks.is_empty() {
            return Ok(());
        }
        self.begin_if_needed()?;
        let mut failed = false;
        for task in self.tasks.values_mut() {
            if let Err(error) = task.punctuate(&self.sink) {
                tracing::warn!(%error, partition = task.partition, "punctuation failed");
                failed = true;
                break;
            }
        }
        if failed {
            return self.recover(consumer, Failure::Aborted);
        }
        Metrics::inc(&self.thread_metrics().punctuations);
        Ok(())
    }

    /// Commits once the interval is up, or earlier when the input is idle (`drained`: the
    /// last poll found nothing waiting) and the thread is caught up with it.
    fn maybe_commit(
        &mut self,
        consumer: &GroupConsumer,
        drained: bool,
    ) -> Result<(), ProcessorError> {
        if !self.in_txn {
            return Ok(());
        }
        let due = self.txn_started.elapsed() >= self.config.commit_interval;
        let idle = drained && self.config.commit_when_idle && self.caught_up(consumer);
        if due || idle {
            self.commit(consumer)?;
        }
        Ok(())
    }

    /// Every active partition has been processed up to the end its last fetch saw. A thread
    /// that is behind keeps batching to the interval, as committing costs round trips.
    fn caught_up(&self, consumer: &GroupConsumer) -> bool {
        let input = &self.config.topics.input;
        self.tasks.values().all(|task| {
            let position = task
                .pending_offset()
                .or_else(|| self.local.position(task.partition));
            match (
                position,
                cached_high_watermark(consumer, input, task.partition),
            ) {
                (Some(position), Some(end)) => position >= end,
                // Nothing fetched or committed yet: nothing known to be waiting.
                (None, _) | (_, None) => true,
            }
        })
    }

    fn pending_offsets(&self) -> Result<TopicPartitionList, KafkaError> {
        let mut offsets = TopicPartitionList::new();
        for task in self.tasks.values() {
            if let Some(offset) = task.pending_offset() {
                offsets.add_partition_offset(
                    &self.config.topics.input,
                    task.partition,
                    Offset::Offset(offset),
                )?;
            }
        }
        Ok(offsets)
    }

    /// Commits the open transaction; on failure, recovers so processing can go on.
    fn commit(&mut self, consumer: &GroupConsumer) -> Result<(), ProcessorError> {
        if !self.in_txn {
            return Ok(());
        }
        let started = Instant::now();
        for task in self.tasks.values_mut() {
            if let Err(error) = task.before_commit(&self.sink) {
                match error {
                    TaskError::Produce(error) => {
                        tracing::warn!(%error, "produce failed, aborting the transaction");
                        return self.recover(consumer, Failure::Aborted);
                    }
                    other => return Err(other.into()),
                }
            }
        }
        let offsets = self.pending_offsets()?;
        let group = consumer.group_metadata();
        self.liveness.doing(self.thread, Activity::Committing);
        #[cfg(feature = "fault-hooks")]
        crate::fault::before_commit();
        match self.sink.producer().commit(&offsets, group.as_ref()) {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error).map(|s| s.to_string()), "commit failed");
                let failure = match error {
                    CommitError::Aborted(_) | CommitError::Delivery(_) => Failure::Aborted,
                    CommitError::Fatal(_) => Failure::Fatal,
                    CommitError::Unknown(_) => Failure::Unknown,
                };
                return self.recover(consumer, failure);
            }
        }
        self.in_txn = false;
        let tracker = self.sink.producer().tracker();
        for task in self.tasks.values_mut() {
            let checkpoint = tracker.next_changelog_offset(task.partition);
            let windows_checkpoint = tracker.next_offset(WINDOWS_CHANGELOG, task.partition);
            let position = task.pending_offset();
            task.committed(checkpoint, windows_checkpoint)?;
            if let Some(position) = position {
                self.local.set_position(task.partition, position);
            }
        }
        if self.config.guarantee == Guarantee::AtLeastOnce && offsets.count() > 0 {
            // The store already holds these records' effects, and each key remembers its last
            // offset, so a crash before this commit replays records without double counting.
            if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(%error, "offset commit failed; records will be replayed");
            }
        }
        let took = started.elapsed();
        self.metrics
            .thread(self.thread)
            .committed(&mut self.uncommitted, took, now_ms());
        self.liveness.doing(self.thread, Activity::Polling);
        self.liveness.progressed(self.thread);
        tracing::debug!(?took, open_for = ?self.txn_started.elapsed(), "transaction committed");
        Ok(())
    }

    /// Brings tasks back to committed state after a failed transaction.
    fn recover(
        &mut self,
        consumer: &GroupConsumer,
        failure: Failure,
    ) -> Result<(), ProcessorError> {
        Metrics::inc(&self.thread_metrics().aborts);
        self.uncommitted.discard();
        self.liveness.doing(self.thread, Activity::Aborting);
        if self.shutdown.is_triggered() {
            // Stopping: recreating the producer and restoring would only delay the exit (the
            // campaign saw a SIGTERM wait 45 s in init_transactions while a broker was
            // away). Whatever stays open is aborted when this transactional id starts again,
            // or at the transaction timeout; the stores hold committed state only.
            self.in_txn = false;
            for task in self.tasks.values_mut() {
                task.rollback()?;
            }
            tracing::warn!(
                ?failure,
                "commit failed while stopping; leaving the transaction to be aborted"
            );
            self.failed_while_stopping = true;
            return Ok(());
        }
        let mut recreate = failure != Failure::Aborted;
        if !recreate {
            if let Err(error) = self.sink.producer().abort() {
                tracing::warn!(%error, "abort failed, recreating the producer");
                recreate = true;
            }
        }
        self.in_txn = false;
        for task in self.tasks.values_mut() {
            task.rollback()?;
        }
        if recreate {
            self.liveness.doing(self.thread, Activity::Recovering);
            // Re-initialising with the same transactional id completes or aborts whatever the
            // old producer left open; only then is the changelog's end the truth.
            let Some(producer) = self.recreate_producer()? else {
                self.failed_while_stopping = true;
                return Ok(());
            };
            drop(self.sink.replace_producer(producer));
            Metrics::inc(&self.thread_metrics().producer_recreated);
        }
        if failure == Failure::Unknown || recreate {
            // The committed transaction, if it was, is in the changelog past each checkpoint;
            // the restore reads to the true end, waiting out any transaction still open.
            let restorer = Restorer::new(&self.config, self.ends.clone())?;
            for task in self.tasks.values() {
                let progress = RestoreProgress::default();
                let report = restorer
                    .restore(task.store(), task.partition, &progress, &self.shutdown)
                    .map_err(|source| ProcessorError::Restore {
                        partition: task.partition,
                        source,
                    })?;
                self.metrics.restored(report.records, report.elapsed);
            }
            for task in self.tasks.values_mut() {
                task.rollback()?;
            }
        }
        self.liveness.doing(self.thread, Activity::Rewinding);
        let rewound = self.rewind(consumer);
        self.liveness.doing(self.thread, Activity::Polling);
        rewound
    }

    /// A new producer for this thread's transactional id. A broker outage can outlast
    /// `init_transactions`' timeout (a fault run saw a 3-broker cluster take 144 s to come
    /// back); as Kafka Streams retries such timeouts, this retries until the brokers answer,
    /// and the stall watchdog reports the thread meanwhile. `None`: the daemon is stopping.
    fn recreate_producer(&self) -> Result<Option<Producer>, ProcessorError> {
        let partitions = self.sink.producer().tracker().partitions();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match create_producer(&self.config, &self.instance_id, self.thread, partitions) {
                Ok(producer) => return Ok(Some(producer)),
                Err(error) if error.is_retriable() => {
                    if self.shutdown.is_triggered() {
                        tracing::warn!(%error, "recreating the producer failed while stopping");
                        return Ok(None);
                    }
                    tracing::warn!(%error, attempt, "recreating the producer timed out; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Seeks every active partition back to its committed input offset.
    fn rewind(&mut self, consumer: &GroupConsumer) -> Result<(), ProcessorError> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let mut wanted = TopicPartitionList::new();
        for partition in self.tasks.keys() {
            wanted.add_partition(&self.config.topics.input, *partition);
        }
        let committed = consumer.committed_offsets(wanted, KAFKA_TIMEOUT)?;
        let mut seeks = TopicPartitionList::new();
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            seeks.add_partition_offset(element.topic(), element.partition(), offset)?;
        }
        seek(consumer, seeks)
    }

    fn revoke(
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

    fn assign(
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
    fn start_restores(&mut self) -> Result<(), ProcessorError> {
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

    fn activate(&mut self, consumer: &GroupConsumer, done: Restored) -> Result<(), ProcessorError> {
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
        let task = Task::new(
            done.partition,
            store.clone(),
            self.config.max_value_bytes,
            self.config.windows,
        )?;
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

    fn close(&mut self, consumer: &GroupConsumer) -> Result<(), ProcessorError> {
        let committed = if self.in_txn {
            self.commit(consumer)
        } else {
            Ok(())
        };
        self.queued.clear();
        // Cancel all first, then join: each notices within a broker request slice.
        let running: Vec<Restoring> = self.restoring.drain().map(|(_, r)| r).collect();
        for restoring in &running {
            restoring
                .cancel
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for restoring in running {
            let _ = restoring.thread.join();
        }
        for thread in self.finishing.drain(..) {
            let _ = thread.join();
        }
        for (partition, task) in std::mem::take(&mut self.tasks) {
            self.local.remove(partition);
            if let Err(error) = task.store().flush() {
                tracing::warn!(%error, partition, "flush on close failed");
            }
        }
        // A commit that went through delivered everything; after one that failed, waiting
        // for deliveries (up to the 30 s client timeout while a broker is away) buys nothing.
        if !self.failed_while_stopping {
            self.sink.producer().close();
        }
        committed
    }
}

fn cached_high_watermark(consumer: &GroupConsumer, topic: &str, partition: i32) -> Option<i64> {
    crate::kafka::cached_high_watermark(consumer, topic, partition)
}

fn seek(consumer: &GroupConsumer, wanted: TopicPartitionList) -> Result<(), ProcessorError> {
    Ok(crate::kafka::seek_all(consumer, wanted, KAFKA_TIMEOUT)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Aborted,
    Fatal,
    Unknown,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long a store's lock may be held elsewhere (a closing handle of this process, a
/// restore that was cancelled) before the task gives up; never a reason to delete the store.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// KAFKA-20416: a coordinator that is moving may answer "no committed offset" for a group that
/// has one. A store that holds state while the group says "no offset" asks again for this long.
const NO_OFFSET_RECHECK: Duration = Duration::from_secs(30);

/// Opens a partition's store and restores it, on its own thread.
struct RestoreJob {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    ends: Arc<Reader>,
    partition: i32,
    generation: u64,
    progress: Arc<RestoreProgress>,
    cancel: Arc<AtomicBool>,
    done: mpsc::Sender<Restored>,
}

impl RestoreJob {
    fn run(self) {
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
            limits,
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
                store = Store::open(&path)?;
                restorer.restore_with(&store, self.partition, limits, &self.progress, cancel)?
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
            if !store.has_states()? {
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
            let error = match Store::open(path) {
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
                    return Ok(Store::open(path)?);
                }
                _ => return Err(error.into()),
            }
        }
    }
}
