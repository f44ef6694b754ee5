//! Where each assigned partition resumes: at the offset the target stored with its data,
//! never at the offset Kafka's group holds (that one is only committed for lag tools).
//!
//! librdkafka runs the rebalance callbacks inside `poll` on the projection thread. An
//! assigned partition is paused there at once, and the loop positions it after `poll`
//! returns, when it may block on the target: look up the stored offset, seek past it,
//! resume. A revoked partition's open batch is dropped: the next owner resumes from the
//! target's offsets, so nothing is lost, and nothing written twice survives the revision
//! checks.

use std::sync::Mutex;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Partition moves since the loop last looked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moves {
    pub assigned: Vec<i32>,
    pub revoked: Vec<i32>,
}

pub struct ProjectionContext {
    topic: String,
    moves: Mutex<Moves>,
}

pub type ProjectionConsumer = BaseConsumer<ProjectionContext>;

impl ProjectionContext {
    pub fn new(topic: &str) -> Self {
        ProjectionContext {
            topic: topic.to_owned(),
            moves: Mutex::new(Moves::default()),
        }
    }

    pub fn take_moves(&self) -> Moves {
        std::mem::take(&mut *self.moves.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ClientContext for ProjectionContext {}

impl ConsumerContext for ProjectionContext {
    fn pre_rebalance(&self, _: &ProjectionConsumer, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut moves = self.moves.lock().unwrap_or_else(|e| e.into_inner());
            for element in list.elements_for_topic(&self.topic) {
                moves.assigned.retain(|p| *p != element.partition());
                moves.revoked.push(element.partition());
            }
        }
    }

    fn post_rebalance(&self, consumer: &ProjectionConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                // Nothing may be fetched from the group's committed offset: the target's
                // offset decides, and the loop seeks there before resuming.
                if let Err(error) = consumer.pause(list) {
                    tracing::warn!(%error, "cannot pause assigned partitions");
                }
                let mut moves = self.moves.lock().unwrap_or_else(|e| e.into_inner());
                for element in list.elements_for_topic(&self.topic) {
                    moves.revoked.retain(|p| *p != element.partition());
                    moves.assigned.push(element.partition());
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
}

/// The first offset to read after `stored`, the last offset the target applied.
pub fn resume_at(stored: Option<i64>) -> Offset {
    match stored {
        Some(offset) => Offset::Offset(offset + 1),
        None => Offset::Beginning,
    }
}

/// Seeks the partitions to their resume offsets and lets them fetch again.
pub fn position(
    consumer: &ProjectionConsumer,
    topic: &str,
    starts: &[(i32, Offset)],
) -> Result<(), KafkaError> {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in starts {
        list.add_partition_offset(topic, *partition, *offset)?;
    }
    crate::kafka::seek_all(consumer, list.clone(), std::time::Duration::from_secs(30))?;
    consumer.resume(&list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_the_stored_offset() {
        assert_eq!(resume_at(Some(41)), Offset::Offset(42));
        assert_eq!(resume_at(None), Offset::Beginning);
    }
}
