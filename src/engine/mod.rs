//! The stream engine: everything between Kafka and an application's folds, and nothing about
//! what the folds compute.
//!
//! How a record flows: the [`processor`] (one per stream thread) polls the input inside the
//! consumer group and hands each record to its partition's [`task`]; the task runs the
//! application's processor with a [`context`] whose writes go to an overlay and, through the
//! [`sink`], to the stores' changelogs, inside the open transaction. Every commit interval the
//! processor commits the transaction with the input offsets; only then is the overlay written
//! to the partition's RocksDB [`store`] with the changelog checkpoints. A newly assigned
//! partition is first restored from its changelogs ([`store::restore`]).
//!
//! The [`application`] module is the whole interface an application sees.

pub mod application;
pub mod context;
pub mod local;
pub mod processor;
pub mod sink;
pub mod store;
pub mod task;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
