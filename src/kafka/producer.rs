//! The producer of the stream thread: transactional under exactly-once, idempotent under
//! at-least-once, and in both cases tracking the changelog offsets it wrote so the store can
//! record the checkpoint its state reflects.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

/// Records delivery outcomes. librdkafka calls it from the producer's polling thread; the
/// stream thread reads it through a clone.
#[derive(Clone)]
pub struct DeliveryTracker(Arc<TrackerState>);

pub struct TrackerState {
    /// The changelog topics whose offsets become store checkpoints.
    changelogs: Vec<String>,
    /// Per changelog, the highest offset delivered per partition since the last
    /// [`DeliveryTracker::reset`].
    last_offsets: Vec<Vec<AtomicI64>>,
    partitions: i32,
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl std::ops::Deref for DeliveryTracker {
    type Target = TrackerState;
    fn deref(&self) -> &TrackerState {
        &self.0
    }
}

impl DeliveryTracker {
    pub fn new(changelogs: &[&str], partitions: i32) -> Self {
        DeliveryTracker(Arc::new(TrackerState {
            changelogs: changelogs.iter().map(|c| (*c).to_owned()).collect(),
            last_offsets: changelogs
                .iter()
                .map(|_| (0..partitions).map(|_| AtomicI64::new(-1)).collect())
                .collect(),
            partitions,
            failures: AtomicU64::new(0),
            first_failure: Mutex::new(None),
        }))
    }
}

impl TrackerState {
    /// Starts a new unit of work (transaction or at-least-once batch).
    pub fn reset(&self) {
        for offset in self.last_offsets.iter().flatten() {
            offset.store(-1, Ordering::Relaxed);
        }
        self.failures.store(0, Ordering::Relaxed);
        *self.first_failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The offset after the last record delivered to `partition` of changelog number
    /// `changelog` (in the order given to [`DeliveryTracker::new`]), if any.
    pub fn next_offset(&self, changelog: usize, partition: i32) -> Option<u64> {
        let last = self
            .last_offsets
            .get(changelog)?
            .get(partition as usize)?
            .load(Ordering::Acquire);
        (last >= 0).then_some(last as u64 + 1)
    }

    fn failure(&self) -> Option<String> {
        if self.failures.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.first_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for DeliveryTracker {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        super::logs::log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::logs::log_error(&error, reason);
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let topic = message.topic();
                if let Some(changelog) = self.changelogs.iter().position(|c| c == topic) {
                    if let Some(slot) =
                        self.last_offsets[changelog].get(message.partition() as usize)
                    {
                        slot.fetch_max(message.offset(), Ordering::AcqRel);
                    }
                }
            }
            Err((error, message)) => {
                self.failures.fetch_add(1, Ordering::AcqRel);
                let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    *first = Some(format!(
                        "{} [{}]: {error}",
                        message.topic(),
                        message.partition()
                    ));
                }
            }
        }
    }
}

/// How a commit went wrong, which decides what the stream thread does next.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The transaction was aborted (or must be): drop the overlays, rewind the input.
    #[error("transaction aborted")]
    Aborted(#[source] KafkaError),
    /// The producer is unusable (fenced, or a fatal error): recreate it, then as aborted.
    #[error("producer is fenced or failed fatally")]
    Fatal(#[source] KafkaError),
    /// The commit may or may not have happened: recreate the producer and restore the
    /// affected partitions from their checkpoints before going on.
    #[error("commit outcome unknown")]
    Unknown(#[source] KafkaError),
    /// At-least-once: some records were not delivered.
    #[error("delivery failed: {0}")]
    Delivery(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("cannot create producer")]
    Create(#[source] KafkaError),
    #[error("cannot initialise transactions for transactional.id {id}")]
    InitTransactions {
        id: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot send to {topic}")]
    Send {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot begin transaction")]
    Begin(#[source] KafkaError),
}

pub struct Producer {
    inner: ThreadedProducer<DeliveryTracker>,
    tracker: DeliveryTracker,
    transactional_id: Option<String>,
    timeout: Duration,
}

impl ProducerError {
    /// A timeout or another retriable error of `init_transactions`: the brokers are away or
    /// busy, and the same call may succeed later. Creation and fencing errors are final.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ProducerError::InitTransactions {
                source: KafkaError::Transaction(e),
                ..
            } if e.is_retriable() && !e.is_fatal()
        )
    }
}

impl Producer {
    /// Creates the producer; with a transactional id, also `init_transactions`, which fences
    /// a previous incarnation with the same id and aborts its open transaction.
    pub fn create(
        mut config: ClientConfig,
        transactional_id: Option<String>,
        tracker: DeliveryTracker,
        timeout: Duration,
    ) -> Result<Producer, ProducerError> {
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random");
        for (key, default) in [
            // Records only become visible when their transaction commits, and the commit's
            // flush sends at once whatever lingers, so lingering costs no latency and batches
            // more per request; longer lingers were no faster and held more memory
            // (BENCHMARKS.md, "Why the code is the way it is").
            ("linger.ms", "5"),
            ("batch.size", "1000000"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
            // A transaction's first requests often reach the coordinator while it is still
            // completing the previous commit, which answers CONCURRENT_TRANSACTIONS; librdkafka
            // retries AddOffsetsToTxn after retry.backoff.ms, 100 ms by default, so under
            // commits on idle input one commit in several waited a tenth of a second for
            // nothing. Retries still back off exponentially to retry.backoff.max.ms.
            ("retry.backoff.ms", "10"),
        ] {
            if config.get(key).is_none() {
                config.set(key, default);
            }
        }
        if let Some(id) = &transactional_id {
            config.set("transactional.id", id);
        }
        let inner: ThreadedProducer<DeliveryTracker> = config
            .create_with_context(tracker.clone())
            .map_err(ProducerError::Create)?;
        if let Some(id) = &transactional_id {
            // librdkafka asks for the producer id as soon as a broker connection is up and
            // otherwise retries on a 500 ms timer; at start there is no connection yet, so
            // every (re)start paid half a second. A metadata request opens one first.
            let started = std::time::Instant::now();
            let _ = inner.client().fetch_metadata(None, timeout);
            let connected = started.elapsed();
            init_transactions(&inner, timeout).map_err(|source| {
                ProducerError::InitTransactions {
                    id: id.clone(),
                    source,
                }
            })?;
            tracing::debug!(?connected, ready = ?started.elapsed(), "transactions initialised");
        }
        Ok(Producer {
            inner,
            tracker,
            transactional_id,
            timeout,
        })
    }

    pub fn is_transactional(&self) -> bool {
        self.transactional_id.is_some()
    }

    pub fn tracker(&self) -> &DeliveryTracker {
        &self.tracker
    }

    /// Queues a record; waits (bounded by librdkafka's queue) while the local queue is full.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), ProducerError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        self.send_record(topic, record)
    }

    /// A record with a key and no value: compaction deletes the key.
    pub fn send_tombstone(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
    ) -> Result<(), ProducerError> {
        let record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).key(key).partition(partition);
        self.send_record(topic, record)
    }

    fn send_record(
        &self,
        topic: &str,
        mut record: BaseRecord<'_, [u8], [u8]>,
    ) -> Result<(), ProducerError> {
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    // The polling thread drains the queue; give it a moment.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((source, _)) => {
                    return Err(ProducerError::Send {
                        topic: topic.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    pub fn begin(&self) -> Result<(), ProducerError> {
        self.tracker.reset();
        if self.is_transactional() {
            self.inner
                .begin_transaction()
                .map_err(ProducerError::Begin)?;
        }
        Ok(())
    }

    /// Commits the open transaction with the input offsets (exactly-once), or flushes the
    /// records (at-least-once; the caller commits the offsets after the store).
    pub fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: Option<&ConsumerGroupMetadata>,
    ) -> Result<(), CommitError> {
        if !self.is_transactional() {
            self.wait_delivered()
                .map_err(|e| CommitError::Delivery(e.to_string()))?;
            return match self.tracker.failure() {
                Some(failure) => Err(CommitError::Delivery(failure)),
                None => Ok(()),
            };
        }
        if offsets.count() > 0 {
            let Some(group) = group else {
                // Without the group's metadata the offsets cannot join the transaction.
                return Err(CommitError::Aborted(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::State,
                )));
            };
            self.retry(|p| p.send_offsets_to_transaction(offsets, group, self.timeout))?;
        }
        // commit_transaction flushes through rdkafka's flush first (below); with nothing left
        // in flight that returns at once. A timeout here is left to commit_transaction.
        let _ = self.wait_delivered();
        self.retry(|p| p.commit_transaction(self.timeout))
    }

    /// Waits until every queued record is delivered and its report handled. rdkafka's own
    /// `flush` (also called by its `commit_transaction`) waits in 100 ms `poll` slices that
    /// always run to their end, so a commit with records still in flight took >= 100 ms
    /// (BENCHMARKS.md, "Why the code is the way it is"). librdkafka's own flush, while the
    /// producer's polling thread serves the delivery reports, returns as soon as the last one
    /// is handled.
    fn wait_delivered(&self) -> Result<(), KafkaError> {
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the handle is owned by `self.inner` and outlives the call; rd_kafka_flush is
        // thread-safe, and with event-based delivery reports it only waits on a counter.
        let error = unsafe {
            rdkafka::bindings::rd_kafka_flush(self.inner.client().native_ptr(), timeout_ms)
        };
        match error {
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
            other => Err(KafkaError::Flush(other.into())),
        }
    }

    /// Retries a retriable transactional call a few times, then classifies the failure.
    fn retry(
        &self,
        call: impl Fn(&ThreadedProducer<DeliveryTracker>) -> Result<(), KafkaError>,
    ) -> Result<(), CommitError> {
        let mut attempts = 0;
        loop {
            let error = match call(&self.inner) {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            attempts += 1;
            let KafkaError::Transaction(ref rd) = error else {
                return Err(CommitError::Unknown(error));
            };
            if rd.is_fatal() {
                return Err(CommitError::Fatal(error));
            }
            if rd.txn_requires_abort() {
                return Err(CommitError::Aborted(error));
            }
            if rd.is_retriable() && attempts < 3 {
                tracing::warn!(%error, attempts, "transactional call failed, retrying");
                continue;
            }
            return Err(CommitError::Unknown(error));
        }
    }

    /// Aborts the open transaction; errors are logged, since the caller rewinds either way
    /// and a producer that cannot abort is recreated by the caller.
    pub fn abort(&self) -> Result<(), KafkaError> {
        if !self.is_transactional() {
            self.inner
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            return Ok(());
        }
        self.inner.abort_transaction(self.timeout)
    }

    /// Flushes outstanding records before the producer is dropped.
    pub fn close(&self) {
        if let Err(error) = self.wait_delivered() {
            tracing::warn!(%error, "producer flush on close failed");
        }
    }
}

/// `init_transactions` in short slices. When a crashed incarnation left a transaction open,
/// the broker answers the first InitProducerId with CONCURRENT_TRANSACTIONS while it aborts
/// that transaction (a few ms), and librdkafka only asks again after a fixed 500 ms. Calling
/// `init_transactions` again after a timeout is allowed and restarts the request at once, so a
/// restart after kill -9 waits for the abort, not for the timer.
fn init_transactions(
    producer: &ThreadedProducer<DeliveryTracker>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    const SLICE: Duration = Duration::from_millis(25);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match producer.init_transactions(SLICE.min(left)) {
            // A timed-out slice reports the last InitProducerId error (e.g. the
            // CONCURRENT_TRANSACTIONS above) as retriable.
            Err(KafkaError::Transaction(ref e)) if e.is_retriable() && !left.is_zero() => {}
            other => return other,
        }
    }
}
