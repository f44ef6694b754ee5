//! Topics at start: create what is missing, and refuse to run on topics that are not
//! co-partitioned (the changelog partition p must hold exactly the state of input partition p).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::logs::LogContext;
use crate::config::Config;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub input: i32,
    pub output: i32,
    pub dlq: i32,
    /// The window output topic; 0 with windows off.
    pub windows: i32,
}

#[derive(Clone, Copy)]
enum Cleanup {
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

pub async fn ensure_topics(admin: &Admin, config: &Config) -> Result<Layout, AdminError> {
    let t = &config.topics;
    // The changelog follows the input's partition count when the input already exists.
    let existing_input = partition_count(admin, &t.input)?;
    let p = existing_input.unwrap_or(t.partitions);
    let wanted = [
        Wanted {
            name: &t.input,
            partitions: p,
            cleanup: Cleanup::Delete,
        },
        Wanted {
            name: &t.changelog,
            partitions: p,
            cleanup: Cleanup::Compact,
        },
        Wanted {
            name: &t.output,
            partitions: p,
            cleanup: Cleanup::Delete,
        },
        Wanted {
            name: &t.dlq,
            partitions: p,
            cleanup: Cleanup::Delete,
        },
        Wanted {
            name: &t.owners,
            partitions: 1,
            cleanup: Cleanup::Compact,
        },
    ];
    let mut wanted = Vec::from(wanted);
    if let Some(windows) = &config.windows {
        const DAY_MS: i64 = 86_400_000;
        wanted.push(Wanted {
            name: &t.windows_changelog,
            partitions: p,
            cleanup: Cleanup::CompactDelete {
                retention_ms: windows.retention_ms.saturating_add(DAY_MS),
            },
        });
        wanted.push(Wanted {
            name: &t.windows,
            partitions: p,
            cleanup: Cleanup::Delete,
        });
    }
    let internal =
        |name: &str| name == t.changelog || name == t.owners || name == t.windows_changelog;
    let mut counts = Vec::with_capacity(wanted.len());
    for topic in &wanted {
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
    let (input, changelog) = (counts[0], counts[1]);
    if input != changelog {
        return Err(AdminError::NotCoPartitioned {
            input: t.input.clone(),
            input_partitions: input,
            changelog: t.changelog.clone(),
            changelog_partitions: changelog,
        });
    }
    if config.windows.is_some() && counts[5] != input {
        return Err(AdminError::NotCoPartitioned {
            input: t.input.clone(),
            input_partitions: input,
            changelog: t.windows_changelog.clone(),
            changelog_partitions: counts[5],
        });
    }
    Ok(Layout {
        input,
        output: counts[2],
        dlq: counts[3],
        windows: counts.get(6).copied().unwrap_or(0),
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
