//! What a task writes: changelog records of its stores, records for the application's output
//! topics, and dead-letter records. All of them go through the stream thread's producer,
//! inside the open transaction under exactly-once.

use rdkafka::message::{Header, OwnedHeaders};

use super::application::{OutputId, StoreId};
use crate::kafka::admin::Layout;
use crate::kafka::producer::{Producer, ProducerError};
use crate::partitioner::partition_for_key;

/// An input record as the processor sees it, detached from librdkafka's message type.
#[derive(Debug, Clone, Copy)]
pub struct InputRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

pub struct Sink {
    producer: Producer,
    /// By store: the changelog topics, in the order of the producer's delivery tracker.
    changelogs: Vec<String>,
    /// By output: topic and partition count.
    outputs: Vec<(String, i32)>,
    dlq: String,
    layout: Layout,
    dlq_max_value_bytes: usize,
}

impl Sink {
    pub fn new(
        producer: Producer,
        changelogs: Vec<String>,
        outputs: Vec<String>,
        dlq: String,
        layout: Layout,
        dlq_max_value_bytes: usize,
    ) -> Self {
        let outputs = outputs
            .into_iter()
            .zip(layout.outputs.iter().copied())
            .collect();
        Sink {
            producer,
            changelogs,
            outputs,
            dlq,
            layout,
            dlq_max_value_bytes,
        }
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    pub fn replace_producer(&mut self, producer: Producer) -> Producer {
        std::mem::replace(&mut self.producer, producer)
    }

    /// A store's new value (`Some`) or a tombstone (`None`), to partition p of its changelog.
    pub fn changelog(
        &self,
        store: StoreId,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ProducerError> {
        let topic = &self.changelogs[store.0];
        match value {
            Some(value) => self
                .producer
                .send(topic, Some(partition), Some(key), value, None),
            None => self.producer.send_tombstone(topic, partition, key),
        }
    }

    /// A record for an output topic, from input partition `partition`.
    pub fn send(
        &self,
        output: OutputId,
        partition: i32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), ProducerError> {
        let (topic, partitions) = &self.outputs[output.0];
        let out = co_partition(self.layout.input, *partitions, partition, key);
        self.producer.send(topic, Some(out), Some(key), value, None)
    }

    /// Sends an input record to the dead-letter topic with the reason in its headers.
    pub fn dead_letter(
        &self,
        record: &InputRecord<'_>,
        kind: &str,
        message: &str,
    ) -> Result<(), ProducerError> {
        let value = record.value.unwrap_or_default();
        let kept = &value[..value.len().min(self.dlq_max_value_bytes)];
        let key = record
            .key
            .map(|k| &k[..k.len().min(self.dlq_max_value_bytes.max(1024))]);
        let partition = record.partition.rem_euclid(self.layout.dlq);
        let headers = OwnedHeaders::new_with_capacity(7)
            .insert(header("error.kind", kind))
            .insert(header("error.message", message))
            .insert(header("source.topic", record.topic))
            .insert(header("source.partition", &record.partition.to_string()))
            .insert(header("source.offset", &record.offset.to_string()))
            .insert(header("original.size", &value.len().to_string()))
            .insert(header(
                "truncated",
                if kept.len() < value.len() {
                    "true"
                } else {
                    "false"
                },
            ));
        self.producer
            .send(&self.dlq, Some(partition), key, kept, Some(headers))
    }
}

/// Partition p of a topic co-partitioned with the input, else the key's partition.
fn co_partition(input: i32, topic: i32, partition: i32, key: &[u8]) -> i32 {
    if topic == input {
        partition
    } else {
        partition_for_key(key, topic.max(1))
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
