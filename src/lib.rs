//! hello-streams: a stateful, exactly-once stream processor in the style of Kafka Streams.
//!
//! The crate is a stream [`engine`] that knows nothing about hellos, and the [`hello`]
//! application on top of it ([`engine::application`] is the interface between them).
//!
//! How an event flows:
//! 1. [`kafka::consumer`] polls `hello-events` (read_committed, auto-commit off) inside a
//!    consumer group; the rebalance callbacks open and close one [`engine::task`] per
//!    partition.
//! 2. A newly assigned partition first restores its RocksDB [`engine::store`] from the
//!    application's changelogs, each from its checkpoint to its true end
//!    ([`engine::store::restore`]), while the others keep running.
//! 3. The [`engine::processor`] hands each record to its partition's task, which runs the
//!    application's processor: the hello folds ([`hello::counts`], [`hello::window_task`])
//!    write the key's new state and window through an in-memory overlay and, inside the open
//!    Kafka transaction, to the changelogs, and send count-updated and window records or a
//!    dead letter ([`engine::sink`]).
//! 4. Every commit interval the processor commits the transaction with the input offsets
//!    ([`kafka::producer`]); only then are the overlays written to RocksDB together with the
//!    changelog checkpoints. An abort drops the overlays and rewinds the input.
//! 5. The [`query`] servers (HTTP and the Redis protocol) answer reads from committed local
//!    state ([`hello::queries`] over [`engine::local`]); [`ownership`] tells them who owns
//!    the other partitions.
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
