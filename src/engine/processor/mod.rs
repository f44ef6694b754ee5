//! The stream thread: poll input, hand records to tasks, commit every interval, and react to
//! rebalances and failures. A plain OS thread, like Kafka Streams' StreamThread: every Kafka
//! call on this path blocks, and none of it belongs on the async runtime.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{Config, Guarantee};
use crate::engine::application::Application;
use crate::engine::local::LocalState;
use crate::engine::now_ms;
use crate::engine::sink::{InputRecord, Sink};
use crate::engine::store::restore::{RestoreError, RestoreProgress, Restorer};
use crate::engine::store::StoreError;
use crate::engine::task::{Task, TaskError};
use crate::kafka::admin::Layout;
use crate::kafka::consumer::{self, GroupConsumer, Rebalancer};
use crate::kafka::producer::{CommitError, DeliveryTracker, Producer, ProducerError};
use crate::kafka::{create_end_reader, Reader};
use crate::liveness::{Activity, Liveness};
use crate::ownership::Announcer;
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, ThreadMetrics, Uncommitted};

mod assignment;
mod restore_job;

use assignment::{Queued, Restored, Restoring};

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
    pub app: Arc<dyn Application>,
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

struct Engine {
    config: Arc<Config>,
    app: Arc<dyn Application>,
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
    app: &dyn Application,
    instance_id: &str,
    thread: usize,
    partitions: i32,
) -> Result<Producer, ProducerError> {
    // The order sets the indexes: the tracker's changelog i is store i's.
    let changelogs: Vec<&str> = app.stores().iter().map(|s| s.changelog.as_str()).collect();
    let tracker = DeliveryTracker::new(&changelogs, partitions);
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
            &*setup.app,
            &setup.instance_id,
            setup.thread,
            setup.layout.input,
        )?;
        let sink = Sink::new(
            producer,
            setup
                .app
                .stores()
                .iter()
                .map(|s| s.changelog.clone())
                .collect(),
            setup
                .app
                .outputs()
                .iter()
                .map(|o| o.topic.clone())
                .collect(),
            setup.config.topics.dlq.clone(),
            setup.layout.clone(),
            setup.config.dlq_max_value_bytes,
        );
        let cache_entries_per_store =
            setup.config.query.cache_max_entries / setup.layout.input.max(1) as usize;
        let ends = Arc::new(create_end_reader(&setup.config)?);
        Ok(Engine {
            queued: VecDeque::new(),
            generation: 0,
            ends,
            shutdown,
            next_punctuation: setup.app.punctuate_every().map(|i| Instant::now() + i),
            app: setup.app,
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
        let Some(task) = self.tasks.get_mut(&record.partition) else {
            return Ok(());
        };
        self.uncommitted.processed += 1;
        self.uncommitted.record_timestamp(record.timestamp_ms);
        match task.process(record, &self.sink, &mut self.uncommitted) {
            Ok(_) => Ok(()),
            Err(TaskError::Produce(error)) => {
                tracing::warn!(error = %error, "produce failed, aborting the transaction");
                self.recover(consumer, Failure::Aborted)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn maybe_punctuate(&mut self, consumer: &GroupConsumer) -> Result<(), ProcessorError> {
        let (Some(at), Some(interval)) = (self.next_punctuation, self.app.punctuate_every()) else {
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
            if let Err(error) = task.punctuate(&self.sink, &mut self.uncommitted) {
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
            if let Err(error) = task.before_commit(&self.sink, &mut self.uncommitted) {
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
            let position = task.pending_offset();
            task.committed(tracker)?;
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
            match create_producer(
                &self.config,
                &*self.app,
                &self.instance_id,
                self.thread,
                partitions,
            ) {
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
