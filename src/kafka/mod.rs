//! Kafka clients: the group consumer with its rebalance hooks, the transactional producer and
//! topic administration. Only librdkafka (through rdkafka); Kafka's consumer group is the
//! cluster membership.

pub mod admin;
pub mod connect;
pub mod consumer;
pub mod logs;
pub mod producer;
pub mod security;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, ClientContext};

use crate::config::Config;

/// Settings every client of this daemon shares, `[kafka.security]` included; `overrides` are
/// the raw librdkafka options.
pub fn client_config<'a>(
    config: &Config,
    overrides: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.bootstrap_servers)
        .set("client.id", format!("{}-client", config.application_id))
        // librdkafka spaces connection attempts by half of reconnect.backoff.ms (100 ms), and
        // a new client's first request to a broker learned from the bootstrap metadata waited
        // that out: ~50 ms on every start, for the producer, the group join and each restore
        // reader. Backoff still grows exponentially up to reconnect.backoff.max.ms.
        .set("reconnect.backoff.ms", "10");
    config.kafka.security.apply(&mut client);
    for (key, value) in overrides {
        client.set(key, value);
    }
    client
}

/// A member of consumer group `group` that positions and commits by itself: cooperative
/// rebalancing (only moved partitions are revoked), no automatic offsets, the configured
/// session timeout with heartbeats at a quarter of it.
pub fn group_member_config(config: &Config, group: &str) -> ClientConfig {
    let mut client = client_config(config, std::iter::empty());
    client
        .set("group.id", group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            config.kafka.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (config.kafka.session_timeout.as_millis() / 4)
                .max(100)
                .to_string(),
        );
    client
}

/// Raw consumer options that only mean something to a member of the consumer group. The
/// readers and the admin client never join it, and librdkafka checks them against its own
/// defaults there (`max.poll.interval.ms` below the default 45 s session timeout fails
/// client creation), so they go to the group consumer alone.
const GROUP_ONLY: &[&str] = &[
    "max.poll.interval.ms",
    "heartbeat.interval.ms",
    "group.instance.id",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
];

/// The raw `[kafka.consumer]` options for a client that does not join the group.
pub fn non_member_options(config: &Config) -> impl Iterator<Item = (&String, &String)> {
    config
        .kafka
        .consumer
        .iter()
        .filter(|(key, _)| !GROUP_ONLY.contains(&key.as_str()))
}

/// A consumer that reads a changelog or announcement partition by assignment, never joining
/// the group, and sees committed records only.
pub fn reader_config(config: &Config) -> ClientConfig {
    let mut client = client_config(config, non_member_options(config));
    client
        .set("group.id", &config.application_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // Readers stop at end-of-partition: waiting for more data there only delays them.
        .set("fetch.wait.max.ms", "10")
        // Once its queue holds queued.min.messages, librdkafka waits fetch.queue.backoff.ms
        // (1 s by default) before fetching again, though a restore drains the queue in a
        // fraction of that and then sits idle (BENCHMARKS.md, "Why the code is the way it is").
        .set("fetch.queue.backoff.ms", "10")
        // Enough prefetch for a fast replay, bounded: librdkafka's default queues, per
        // partition, add up when several partitions restore at once (BENCHMARKS.md, "Why the
        // code is the way it is").
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "2097152")
        .set("queued.max.messages.kbytes", "8192")
        .set("queued.min.messages", "20000");
    client
}

/// Context of the reading consumers: end-of-partition is how they know they are done, so
/// librdkafka reporting it as a global error is noise, not a problem.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        logs::log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Reaching a partition's end is how readers know they are done, not an error;
        // librdkafka reports it both ways.
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            logs::log_error(&error, reason);
        }
    }
}

impl ConsumerContext for ReaderContext {}

pub type Reader = BaseConsumer<ReaderContext>;

pub fn create_reader(config: &Config) -> Result<Reader, KafkaError> {
    reader_config(config).create_with_context(ReaderContext)
}

/// A client that only asks for partition ends as a `read_uncommitted` reader sees them (the
/// high watermark): the true end of a changelog, past any open transaction. librdkafka lists
/// offsets with the handle's isolation level, and only a consumer handle has one.
pub fn create_end_reader(config: &Config) -> Result<Reader, KafkaError> {
    let mut client = reader_config(config);
    client.set("isolation.level", "read_uncommitted");
    client.create_with_context(ReaderContext)
}

/// The partition's end as of the consumer's last fetch response: no broker round trip (rdkafka
/// only wraps the querying variant).
pub fn cached_high_watermark<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the handle lives as long as `consumer`; the call only reads librdkafka's cached
    // partition state under its own lock and writes the two out-parameters.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Seeks every listed partition, or fails after `timeout`. librdkafka reports a seek it could
/// not apply (no leader during a broker outage, say) per partition inside the returned list;
/// going on then would keep fetching from the old position.
pub fn seek_all<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    wanted: rdkafka::TopicPartitionList,
    timeout: std::time::Duration,
) -> Result<(), KafkaError> {
    use rdkafka::consumer::Consumer;
    let deadline = std::time::Instant::now() + timeout;
    let mut pending = wanted;
    loop {
        let result =
            consumer.seek_partitions(pending.clone(), std::time::Duration::from_secs(5))?;
        let mut failed = rdkafka::TopicPartitionList::new();
        let mut last_error = None;
        for element in result.elements() {
            if let Err(error) = element.error() {
                failed.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    element.offset(),
                )?;
                last_error = Some(error);
            }
        }
        let Some(error) = last_error else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            return Err(error);
        }
        tracing::info!(%error, partitions = failed.count(), "seek not applied yet, retrying");
        std::thread::sleep(std::time::Duration::from_millis(200));
        pending = failed;
    }
}
