//! The interface between the engine and an application: what stores and outputs it declares,
//! and the processor it gives each partition.
//!
//! The engine owns everything about Kafka and RocksDB: the poll loop, the transaction, the
//! overlay of uncommitted writes, commit and abort, restore, rebalances. An application only
//! folds records into its stores through a [`Context`], in the style of Kafka Streams'
//! Processor API, and never sees a producer, a consumer or a database handle it could misuse.
//!
//! Guarantees a processor can rely on:
//! - every write (`Context::put`, `Context::delete`) and every record sent (`Context::send`,
//!   `Context::dead_letter`) belongs to the open transaction: all of them become visible
//!   together, or none do;
//! - `Context::get` sees the open transaction's own writes first, then committed state;
//! - after [`Processor::rolled_back`], the store holds committed state only, and the input is
//!   read again from the committed offset.

use std::time::Duration;

use super::context::Context;
use super::sink::InputRecord;
use super::store::{Store, StoreError};
use super::task::TaskError;
use crate::kafka::admin::Cleanup;

/// A store an application declares, by its position in [`Application::stores`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreId(pub usize);

/// An output topic, by its position in [`Application::outputs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutputId(pub usize);

/// A key/value store of every partition, with its changelog.
///
/// All stores of a partition live in one RocksDB, one column family each, and commit in one
/// `WriteBatch` with their changelogs' checkpoints. The first store is the family RocksDB
/// calls default; the engine keeps its bookkeeping there, under keys that begin with 0xFF,
/// which no key of the first store may do.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// Column family name; also names the store in logs, errors and state dumps.
    pub family: &'static str,
    /// Compacted topic co-partitioned with the input; created if missing.
    pub changelog: String,
    pub cleanup: Cleanup,
    /// A second ordering of the store, kept in its own family (local only, rebuilt by a
    /// restore like the store).
    pub index: Option<IndexSpec>,
    /// The input offset a value's fold consumed, when it records one. At least once, a restore
    /// holds back values that folded input the task will process again; `None` (or no function):
    /// always applied.
    pub folded_offset: Option<fn(key: &[u8], value: &[u8]) -> Option<i64>>,
    /// Point reads of committed values through [`Store::get_cached`] go through a bounded
    /// cache (`query.cache_max_entries`). Only the first store may ask for it.
    pub read_cache: bool,
}

/// A secondary index: every key of the store that `key` maps to an index key appears in the
/// index family under that key, with the same value.
#[derive(Debug, Clone, Copy)]
pub struct IndexSpec {
    pub family: &'static str,
    pub key: fn(&[u8]) -> Option<Vec<u8>>,
}

/// A topic the application sends records to. A topic with as many partitions as the input
/// gets partition p's records in partition p; any other gets them by key hash.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub topic: String,
}

pub trait Application: Send + Sync + 'static {
    fn stores(&self) -> &[StoreSpec];

    fn outputs(&self) -> &[OutputSpec];

    /// Wall-clock time between calls of [`Processor::punctuate`]; `None`: never.
    fn punctuate_every(&self) -> Option<Duration> {
        None
    }

    /// The processor of a partition whose store is restored and about to process input.
    fn processor(&self, partition: i32, store: &Store) -> Result<Box<dyn Processor>, StoreError>;
}

/// Folds one partition's records. Called only from its stream thread.
pub trait Processor: Send {
    fn process(&mut self, record: &InputRecord<'_>, ctx: &mut Context<'_>)
        -> Result<(), TaskError>;

    /// Every [`Application::punctuate_every`], inside the open transaction.
    fn punctuate(&mut self, _ctx: &mut Context<'_>) -> Result<(), TaskError> {
        Ok(())
    }

    /// Last writes of the open transaction, just before it commits.
    fn before_commit(&mut self, _ctx: &mut Context<'_>) -> Result<(), TaskError> {
        Ok(())
    }

    /// The transaction committed and the store holds it.
    fn committed(&mut self) {}

    /// The open transaction was dropped: whatever the processor keeps besides the store must
    /// come from the store again (a recovery may also have caught it up with its changelogs).
    fn rolled_back(&mut self, _store: &Store) -> Result<(), StoreError> {
        Ok(())
    }
}
