//! hello-streams: a stateful, exactly-once stream processor in the style of Kafka Streams.
//!
//! How an event flows:
//! 1. [`kafka::consumer`] polls `hello-events` (read_committed, auto-commit off) inside a
//!    consumer group; the rebalance callbacks open and close one [`task`] per partition.
//! 2. A newly assigned partition first restores its RocksDB [`store`] from the changelog,
//!    from its checkpoint to the end ([`store::restore`]), while the others keep running.
//! 3. The [`processor`] hands each record to its partition's task, which decodes and folds it
//!    ([`domain`]) into an in-memory overlay and produces, inside the open Kafka transaction,
//!    the new state to the changelog, a count-updated record to the output topic, or the
//!    record to the dead-letter topic ([`sink`]).
//! 4. Every commit interval the processor commits the transaction with the input offsets
//!    ([`kafka::producer`]); only then are the overlays written to RocksDB together with the
//!    changelog checkpoint. An abort drops the overlays and rewinds the input.
//! 5. The [`query`] servers (HTTP and the Redis protocol) answer reads from committed local
//!    state; [`ownership`] tells them who owns the other partitions.
//!
//! 6. The [`projection`] commands copy the committed `hello-counts` records into PostgreSQL
//!    or Redis, exactly once.
//!
//! [`config`] and [`cli`] turn files, environment and flags into a validated configuration;
//! [`telemetry`] sets up logs and holds the metrics; [`shutdown`] stops everything cleanly.
//! At start [`kafka::connect`] waits, out loud and bounded, for the cluster to answer while
//! [`startup`] keeps `/healthz` answering.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod drill;
pub mod engine;
#[cfg(feature = "fault-hooks")]
pub mod fault;
pub mod hello;
pub mod inspect;
pub mod kafka;
pub mod liveness;
pub mod ownership;
pub mod partitioner;
pub mod projection;
pub mod query;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
