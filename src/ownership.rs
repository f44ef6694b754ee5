//! Who serves which partition, learned through Kafka itself.
//!
//! When a task becomes active, its instance announces `partition → (instance, addresses)` on
//! the compacted single-partition topic `<application_id>-owners`. Every instance reads that
//! topic from the start and keeps the latest announcement per partition. The topic's offsets
//! order the announcements: a new owner announces only after the group moved the partition to
//! it, so the later record is the newer owner and a stale one always loses. No membership
//! protocol of our own; the consumer group decides, this only publishes the outcome.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::engine::local::Owner;
use crate::kafka::logs::LogContext;
use crate::shutdown::Shutdown;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Announcement {
    partition: i32,
    instance_id: String,
    http_addr: String,
    resp_addr: String,
}

/// The latest known owner of each input partition.
#[derive(Debug, Default)]
pub struct OwnerTable {
    owners: RwLock<HashMap<i32, Owner>>,
}

impl OwnerTable {
    pub fn get(&self, partition: i32) -> Option<Owner> {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .cloned()
    }

    fn set(&self, partition: i32, owner: Owner) {
        self.owners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(partition, owner);
    }
}

pub struct Announcer {
    producer: ThreadedProducer<LogContext>,
    topic: String,
    me: Owner,
}

impl Announcer {
    pub fn new(config: &Config, me: Owner) -> Result<Self, KafkaError> {
        let mut client = crate::kafka::client_config(config, &config.kafka.producer);
        client
            .set("linger.ms", "0")
            .set("enable.idempotence", "true");
        client.remove("transactional.id");
        Ok(Announcer {
            producer: client.create_with_context(LogContext)?,
            topic: config.topics.owners.clone(),
            me,
        })
    }

    /// Publishes that this instance now serves `partition`. Best effort: a lost announcement
    /// only makes other instances answer "unavailable" for it until the next one.
    pub fn announce(&self, partition: i32) {
        let announcement = Announcement {
            partition,
            instance_id: self.me.instance_id.clone(),
            http_addr: self.me.http_addr.clone(),
            resp_addr: self.me.resp_addr.clone(),
        };
        let key = partition.to_string();
        let value = serde_json::to_vec(&announcement).unwrap_or_default();
        let record = BaseRecord::<str, [u8]>::to(&self.topic)
            .key(&key)
            .payload(&value)
            .partition(0);
        if let Err((error, _)) = self.producer.send(record) {
            tracing::warn!(%error, partition, "ownership announcement failed");
        }
    }
}

/// An announced address must be `host:port` (a DNS name or an IP, `[v6]` bracketed): it ends up
/// in URLs, `-MOVED` replies and connections the query servers open, so anything else (a
/// path, credentials, spaces, a scheme) is ignored rather than followed.
pub fn valid_addr(addr: &str) -> bool {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    port_ok && host.len() <= 253 && host.split('.').all(label_ok)
}

/// Follows the owners topic until shutdown, on its own thread.
pub fn spawn_reader(
    config: &Config,
    table: Arc<OwnerTable>,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, KafkaError> {
    let consumer = crate::kafka::create_reader(config)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&config.topics.owners, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let thread = std::thread::Builder::new()
        .name("owners-reader".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        let parsed = message
                            .payload()
                            .and_then(|v| serde_json::from_slice::<Announcement>(v).ok());
                        let parsed = parsed.filter(|a| {
                            let valid = valid_addr(&a.http_addr) && valid_addr(&a.resp_addr);
                            if !valid {
                                tracing::warn!(
                                    partition = a.partition,
                                    instance = %a.instance_id.escape_debug(),
                                    "ignoring an owner announcement whose addresses are not host:port"
                                );
                            }
                            valid
                        });
                        if let Some(a) = parsed {
                            table.set(
                                a.partition,
                                Owner {
                                    instance_id: a.instance_id,
                                    http_addr: a.http_addr,
                                    resp_addr: a.resp_addr,
                                },
                            );
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                    Some(Err(error)) => tracing::debug!(%error, "owners reader error"),
                }
            }
        })
        .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
    Ok(thread)
}

#[cfg(test)]
mod tests {
    use super::valid_addr;

    #[test]
    fn only_host_port_addresses_are_followed() {
        for good in [
            "127.0.0.1:8080",
            "[::1]:6380",
            "node-1.example.com:80",
            "localhost:1",
        ] {
            assert!(valid_addr(good), "{good}");
        }
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:99999",
            "http://h:1",
            "h/x:1",
            "user@h:1",
            "h h:1",
            "-h:1",
            "h..x:1",
            "h:1\r\nX: y",
            "[::1]",
            "1.2.3.4:80/path",
        ] {
            assert!(!valid_addr(bad), "{bad}");
        }
    }
}
