//! Topics at start: create what is missing, and refuse to run on topics that are not
//! co-partitioned (the changelog partition p must hold exactly the state of input partition p).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::logs::LogContext;
use crate::config::Config;
use crate::engine::application::Application;

const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("kafka admin request failed")]
    Kafka(#[from] KafkaError),
    #[error("cannot create topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("topic {topic} does not exist and topics.create is false; create it with {partitions} partitions or set topics.create = true")]
    Missing { topic: String, partitions: i32 },
    #[error("topics {input} ({input_partitions} partitions) and {changelog} ({changelog_partitions} partitions) are not co-partitioned; give both the same partition count")]
    NotCoPartitioned {
        input: String,
        input_partitions: i32,
        changelog: String,
        changelog_partitions: i32,
    },
}

/// Partition counts of the topics the processor uses, as found (or created) on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub input: i32,
    pub dlq: i32,
    /// By the application's outputs.
    pub outputs: Vec<i32>,
}

/// How Kafka keeps a topic's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Delete,
    Compact,
    /// Compacted, and deleted after `retention_ms` (a window changelog: expired windows
    /// vanish even where no tombstone reached them).
    CompactDelete {
        retention_ms: i64,
    },
}

struct Wanted<'a> {
    name: &'a str,
    partitions: i32,
    cleanup: Cleanup,
}

pub type Admin = AdminClient<LogContext>;

/// The admin client. Dropping it waits for its polling thread (up to 100 ms), so callers on
/// a latency-sensitive path drop it elsewhere.
pub fn client(config: &Config) -> Result<Admin, KafkaError> {
    super::client_config(config, super::non_member_options(config)).create_with_context(LogContext)
}

/// Creates (or checks) the input, the application's changelogs and outputs, the dead-letter
/// topic and the owners topic.
pub async fn ensure_topics(
    admin: &Admin,
    config: &Config,
    app: &dyn Application,
) -> Result<Layout, AdminError> {
    let t = &config.topics;
    // The changelogs follow the input's partition count when the input already exists.
    let existing_input = partition_count(admin, &t.input)?;
    let p = existing_input.unwrap_or(t.partitions);
    let wanted = |name, partitions, cleanup| Wanted {
        name,
        partitions,
        cleanup,
    };
    let mut topics = vec![wanted(&t.input, p, Cleanup::Delete)];
    let changelogs = 1..1 + app.stores().len();
    for store in app.stores() {
        topics.push(wanted(&store.changelog, p, store.cleanup));
    }
    let outputs = changelogs.end..changelogs.end + app.outputs().len();
    for output in app.outputs() {
        topics.push(wanted(&output.topic, p, Cleanup::Delete));
    }
    topics.push(wanted(&t.dlq, p, Cleanup::Delete));
    topics.push(wanted(&t.owners, 1, Cleanup::Compact));
    let internal =
        |name: &str| name == t.owners || app.stores().iter().any(|store| store.changelog == name);
    let mut counts = Vec::with_capacity(topics.len());
    for topic in &topics {
        let count = match partition_count(admin, topic.name)? {
            Some(count) => count,
            None if t.create || internal(topic.name) => {
                create(admin, topic, t.replication_factor, t.min_insync_replicas).await?;
                topic.partitions
            }
            None => {
                return Err(AdminError::Missing {
                    topic: topic.name.to_owned(),
                    partitions: topic.partitions,
                })
            }
        };
        counts.push(count);
    }
    let input = counts[0];
    for i in changelogs {
        if counts[i] != input {
            return Err(AdminError::NotCoPartitioned {
                input: t.input.clone(),
                input_partitions: input,
                changelog: topics[i].name.to_owned(),
                changelog_partitions: counts[i],
            });
        }
    }
    Ok(Layout {
        input,
        outputs: counts[outputs].to_vec(),
        dlq: counts[counts.len() - 2],
    })
}

fn partition_count(admin: &Admin, topic: &str) -> Result<Option<i32>, AdminError> {
    let metadata = admin.inner().fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(found) = metadata.topics().first() else {
        return Ok(None);
    };
    match found.error() {
        None => Ok(Some(found.partitions().len() as i32)),
        Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(None)
        }
        Some(code) => Err(AdminError::Create {
            topic: topic.to_owned(),
            code: code.into(),
        }),
    }
}

async fn create(
    admin: &Admin,
    topic: &Wanted<'_>,
    replication_factor: i32,
    min_insync_replicas: i32,
) -> Result<(), AdminError> {
    let retention = match topic.cleanup {
        Cleanup::CompactDelete { retention_ms } => retention_ms.to_string(),
        _ => String::new(),
    };
    let mut new = NewTopic::new(
        topic.name,
        topic.partitions,
        TopicReplication::Fixed(replication_factor),
    );
    match topic.cleanup {
        Cleanup::Delete => {}
        Cleanup::Compact => new = new.set("cleanup.policy", "compact"),
        Cleanup::CompactDelete { .. } => {
            new = new
                .set("cleanup.policy", "compact,delete")
                .set("retention.ms", &retention);
        }
    }
    let min_isr = min_insync_replicas.to_string();
    if replication_factor > 1 {
        new = new.set("min.insync.replicas", &min_isr);
    }
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for result in admin.create_topics([&new], &options).await? {
        match result {
            Ok(_) => tracing::info!(
                topic = topic.name,
                partitions = topic.partitions,
                "created topic"
            ),
            // Another instance created it between our look-up and our request.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(AdminError::Create { topic: name, code }),
        }
    }
    Ok(())
}
