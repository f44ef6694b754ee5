//! What a task writes: the changelog record of a changed key, the count-updated record for
//! the output topic, window changelog and `hello-windows` records, and dead-letter records. All of them go through the stream thread's
//! producer, inside the open transaction under exactly-once.

use rdkafka::message::{Header, OwnedHeaders};
use serde::Serialize;

use crate::hello::codec;
use crate::hello::domain::{HelloState, Outcome, Poison};
use crate::hello::windows::{self, StreamClock, WindowCounts};
use crate::kafka::admin::Layout;
use crate::kafka::producer::{Producer, ProducerError};
use crate::partitioner::partition_for_key;

/// Index of the window changelog in the producer's [`crate::kafka::producer::DeliveryTracker`].
pub const WINDOWS_CHANGELOG: usize = 1;

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

/// The count-updated event, one per applied input event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CountUpdated<'a> {
    pub key: &'a str,
    pub hello_count: u64,
    pub hello_total_count: u64,
    pub mood: &'static str,
    pub outcome: Outcome,
    pub reply: Option<&'static str>,
    pub revision: u64,
    pub source_partition: i32,
    pub source_offset: i64,
    pub event_timestamp: i64,
    pub processed_at: i64,
}

/// A window update on `hello-windows`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowUpdated<'a> {
    pub key: &'a str,
    pub window_start: i64,
    pub window_end: i64,
    pub hellos: u64,
    pub events: u64,
    /// True when the window has closed (emit-on-close): this is its last record.
    #[serde(rename = "final")]
    pub closed: bool,
}

pub struct Sink {
    producer: Producer,
    changelog: String,
    output: String,
    windows_changelog: String,
    windows_output: String,
    dlq: String,
    layout: Layout,
    dlq_max_value_bytes: usize,
}

impl Sink {
    pub fn new(producer: Producer, config: &crate::config::Config, layout: Layout) -> Self {
        Sink {
            producer,
            changelog: config.topics.changelog.clone(),
            output: config.topics.output.clone(),
            windows_changelog: config.topics.windows_changelog.clone(),
            windows_output: config.topics.windows.clone(),
            dlq: config.topics.dlq.clone(),
            layout,
            dlq_max_value_bytes: config.dlq_max_value_bytes,
        }
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    pub fn replace_producer(&mut self, producer: Producer) -> Producer {
        std::mem::replace(&mut self.producer, producer)
    }

    /// Output partition p when the output is co-partitioned with the input, else by key.
    fn output_partition(&self, partition: i32, key: &[u8]) -> i32 {
        co_partition(self.layout.input, self.layout.output, partition, key)
    }

    /// A window's new counts (`Some`) or its expiry (`None`, a tombstone).
    pub fn window_changelog(
        &self,
        partition: i32,
        key: &[u8],
        start: i64,
        counts: Option<&WindowCounts>,
    ) -> Result<(), ProducerError> {
        let changelog_key = windows::window_key(key, start);
        match counts {
            Some(counts) => self.producer.send(
                &self.windows_changelog,
                Some(partition),
                Some(&changelog_key),
                &windows::encode_counts(counts),
                None,
            ),
            None => {
                self.producer
                    .send_tombstone(&self.windows_changelog, partition, &changelog_key)
            }
        }
    }

    pub fn stream_clock(&self, partition: i32, clock: &StreamClock) -> Result<(), ProducerError> {
        self.producer.send(
            &self.windows_changelog,
            Some(partition),
            Some(windows::CLOCK_KEY),
            &windows::encode_clock(clock),
            None,
        )
    }

    pub fn window_updated(
        &self,
        partition: i32,
        key: &str,
        start: i64,
        size_ms: i64,
        counts: &WindowCounts,
        closed: bool,
    ) -> Result<(), ProducerError> {
        let event = WindowUpdated {
            key,
            window_start: start,
            window_end: start.saturating_add(size_ms),
            hellos: counts.hellos,
            events: counts.events,
            closed,
        };
        // A flat struct of numbers and a string: serialising cannot fail.
        let value = serde_json::to_vec(&event).unwrap_or_default();
        let out = co_partition(
            self.layout.input,
            self.layout.windows,
            partition,
            key.as_bytes(),
        );
        self.producer.send(
            &self.windows_output,
            Some(out),
            Some(key.as_bytes()),
            &value,
            None,
        )
    }

    pub fn changelog(
        &self,
        partition: i32,
        key: &[u8],
        state: &HelloState,
    ) -> Result<(), ProducerError> {
        self.producer.send(
            &self.changelog,
            Some(partition),
            Some(key),
            &codec::encode_state(state),
            None,
        )
    }

    pub fn epoch(&self, partition: i32, epoch: u64) -> Result<(), ProducerError> {
        self.producer.send(
            &self.changelog,
            Some(partition),
            Some(codec::EPOCH_KEY),
            &codec::encode_u64(epoch),
            None,
        )
    }

    pub fn count_updated(
        &self,
        record: &InputRecord<'_>,
        key: &str,
        state: &HelloState,
        outcome: Outcome,
        processed_at: i64,
    ) -> Result<(), ProducerError> {
        let event = CountUpdated {
            key,
            hello_count: state.hello_count,
            hello_total_count: state.hello_total_count,
            mood: state.mood.as_str(),
            outcome,
            reply: outcome.reply(),
            revision: state.revision,
            source_partition: record.partition,
            source_offset: record.offset,
            event_timestamp: record.timestamp_ms,
            processed_at,
        };
        // Serialising a flat struct of numbers and short strings cannot fail.
        let value = serde_json::to_vec(&event).unwrap_or_default();
        self.producer.send(
            &self.output,
            Some(self.output_partition(record.partition, key.as_bytes())),
            Some(key.as_bytes()),
            &value,
            None,
        )
    }

    /// Sends a poison record to the dead-letter topic with the reason in its headers.
    pub fn dead_letter(
        &self,
        record: &InputRecord<'_>,
        poison: &Poison,
    ) -> Result<(), ProducerError> {
        let value = record.value.unwrap_or_default();
        let kept = &value[..value.len().min(self.dlq_max_value_bytes)];
        let key = record
            .key
            .map(|k| &k[..k.len().min(self.dlq_max_value_bytes.max(1024))]);
        let partition = record.partition.rem_euclid(self.layout.dlq);
        let headers = OwnedHeaders::new_with_capacity(7)
            .insert(header("error.kind", poison.kind.as_str()))
            .insert(header("error.message", &poison.message))
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
