//! The group consumer of the input topic.
//!
//! librdkafka runs the rebalance callbacks inside `poll`, on the stream thread, between two
//! records. That is the one moment the stream thread holds no open work in hand, so the
//! [`Rebalancer`] can commit and close revoked tasks synchronously before their partitions
//! move, exactly as Kafka Streams does in `onPartitionsRevoked`.

use std::sync::Arc;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::config::{Config, Guarantee};

pub type GroupConsumer = BaseConsumer<GroupContext>;

/// What the stream thread does when partitions move.
pub trait Rebalancer: Send + Sync + 'static {
    /// Partitions are about to be taken away; `lost` means they may already be owned
    /// elsewhere, so nothing may be committed for them.
    fn revoke(&self, consumer: &GroupConsumer, partitions: &[i32], lost: bool);
    /// Partitions were added to the assignment.
    fn assign(&self, consumer: &GroupConsumer, partitions: &[i32]);
}

pub struct GroupContext {
    rebalancer: Arc<dyn Rebalancer>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        super::logs::log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::logs::log_error(&error, reason);
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &GroupConsumer, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let lost = rdkafka::consumer::Consumer::assignment_lost(consumer);
            self.rebalancer.revoke(consumer, &partitions_of(list), lost);
        }
    }

    fn post_rebalance(&self, consumer: &GroupConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self.rebalancer.assign(consumer, &partitions_of(list)),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// Creates the consumer of stream thread `thread` (from 0) for the input topic (not yet
/// subscribed).
pub fn create(
    config: &Config,
    thread: usize,
    rebalancer: Arc<dyn Rebalancer>,
) -> Result<GroupConsumer, KafkaError> {
    let mut client = super::group_member_config(config, &config.application_id);
    client
        .set("fetch.wait.max.ms", "10")
        // Small prefetch queues bound memory; a drained one refills at once (see BENCHMARKS.md).
        .set("queued.min.messages", "2000")
        .set("queued.max.messages.kbytes", "2048")
        .set("max.partition.fetch.bytes", "262144")
        .set("fetch.queue.backoff.ms", "10");
    if config.guarantee == Guarantee::ExactlyOnce {
        client.set("isolation.level", "read_committed");
    }
    for (key, value) in &config.kafka.consumer {
        client.set(key, value);
    }
    if let Some(id) = config.kafka.consumer.get("group.instance.id") {
        client.set("group.instance.id", static_member_id(id, thread));
    }
    client.create_with_context(GroupContext { rebalancer })
}

/// Static membership (`group.instance.id`) names one member, and every stream thread is a
/// member of its own: with one id for all, the threads fenced each other in turn. Thread 0
/// keeps the configured id, as it keeps the transactional id, so adding threads later leaves
/// the first member where it was.
fn static_member_id(configured: &str, thread: usize) -> String {
    match thread {
        0 => configured.to_owned(),
        t => format!("{configured}-{t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::static_member_id;

    #[test]
    fn each_stream_thread_is_its_own_static_member() {
        let ids: Vec<String> = (0..3).map(|t| static_member_id("node-a", t)).collect();
        assert_eq!(ids, ["node-a", "node-a-1", "node-a-2"]);
    }
}
