//! What this instance holds: each of its partitions' store or restore progress, the input
//! position its store reflects and its lag, whether the stream threads run, and the owner
//! table for every other partition. The stream threads write it; the query servers read
//! through it, so a read is routed by the key's partition to a store, a "restoring" answer,
//! or the owner elsewhere.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::Serialize;

use super::store::restore::RestoreProgress;
use super::store::{CacheStats, Store, StoreError};
use crate::config::Config;
use crate::ownership::OwnerTable;
use crate::partitioner::partition_for_key;
use crate::telemetry::prometheus::{Exposition, Kind};
use crate::telemetry::Metrics;

/// Where another instance serves its partitions (from the ownership announcements).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub instance_id: String,
    /// `host:port` of its HTTP server.
    pub http_addr: String,
    /// `host:port` of its RESP server.
    pub resp_addr: String,
}

/// The answer to a read of key K: what the store of K's partition holds, or why this
/// instance cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    /// The key's partition is owned and ready here, and the key was never seen.
    NotFound,
    /// The key can never hold a value; the message says why.
    InvalidKey(String),
    /// The key's partition is being restored here; answering now could be stale.
    Restoring {
        partition: i32,
        restored: u64,
        total: u64,
    },
    /// Another instance owns the key's partition.
    Elsewhere {
        partition: i32,
        owner: Owner,
    },
    /// Nobody is known to own the partition right now (rebalance in progress, or no instance).
    Unavailable {
        partition: i32,
    },
    /// The store failed; the message is for the client.
    Failed(String),
}

impl<T> Lookup<T> {
    /// The same routing answer about another kind of value; `Found` is mapped by `found`.
    pub fn map<U>(self, found: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(value) => Lookup::Found(found(value)),
            Lookup::NotFound => Lookup::NotFound,
            Lookup::InvalidKey(message) => Lookup::InvalidKey(message),
            Lookup::Restoring {
                partition,
                restored,
                total,
            } => Lookup::Restoring {
                partition,
                restored,
                total,
            },
            Lookup::Elsewhere { partition, owner } => Lookup::Elsewhere { partition, owner },
            Lookup::Unavailable { partition } => Lookup::Unavailable { partition },
            Lookup::Failed(message) => Lookup::Failed(message),
        }
    }
}

/// What a read reflects: every input record of `partition` up to `offset` (inclusive) has
/// its effect in the answer; -1 when the partition has applied nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// A partition this instance holds.
pub enum PartitionView {
    Restoring(Arc<RestoreProgress>),
    Active(Arc<Store>),
}

/// One partition's view, alone on its cache line. A read takes the slot's lock (a write to
/// its reader count); with one lock for all partitions, the query threads kept writing the
/// same line and two threads read no faster than one.
#[repr(align(64))]
struct Slot(RwLock<Option<PartitionView>>, Offsets);

/// `next`: the input offset after the last record whose effect the partition's store holds
/// (what a read of it reflects); `lag`: input records beyond the stream thread's position.
/// -1: unknown.
struct Offsets {
    next: AtomicI64,
    lag: AtomicI64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot(
            RwLock::default(),
            Offsets {
                next: AtomicI64::new(-1),
                lag: AtomicI64::new(-1),
            },
        )
    }
}

impl Slot {
    fn read(&self) -> RwLockReadGuard<'_, Option<PartitionView>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct LocalState {
    instance_id: String,
    input_partitions: i32,
    /// Indexed by input partition.
    views: Box<[Slot]>,
    owners: Arc<OwnerTable>,
    metrics: Arc<Metrics>,
    /// Stream threads the instance runs (`app.stream_threads`).
    threads: usize,
    /// Stream threads running now; ready needs all of them.
    running: AtomicUsize,
    /// Bit t: the group gave stream thread t its first assignment (possibly empty). Until
    /// every thread has one, some partitions may still come to this instance, and answering
    /// "ready" would invite wrong 503s.
    joined: AtomicU64,
}

impl LocalState {
    pub fn new(
        config: &Config,
        instance_id: &str,
        input_partitions: i32,
        owners: Arc<OwnerTable>,
        metrics: Arc<Metrics>,
    ) -> Self {
        LocalState {
            instance_id: instance_id.to_owned(),
            input_partitions,
            views: (0..input_partitions.max(0))
                .map(|_| Slot::default())
                .collect(),
            owners,
            metrics,
            threads: config.stream_threads,
            running: AtomicUsize::new(0),
            joined: AtomicU64::new(0),
        }
    }

    fn slot(&self, partition: i32) -> Option<&Slot> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.views.get(p))
    }

    /// Partitions past the count known at start cannot be asked for (keys are routed over
    /// that count), so they have no slot.
    fn set(&self, partition: i32, view: Option<PartitionView>) {
        if let Some(slot) = self.slot(partition) {
            *slot.0.write().unwrap_or_else(|e| e.into_inner()) = view;
        }
    }

    /// Every partition slot, with what this instance holds of it (`None`: nothing).
    pub fn partitions(
        &self,
    ) -> impl Iterator<Item = (i32, RwLockReadGuard<'_, Option<PartitionView>>)> {
        self.views
            .iter()
            .enumerate()
            .map(|(partition, slot)| (partition as i32, slot.read()))
    }

    pub fn set_restoring(&self, partition: i32, progress: Arc<RestoreProgress>) {
        self.set(partition, Some(PartitionView::Restoring(progress)));
    }

    pub fn set_active(&self, partition: i32, store: Arc<Store>) {
        self.set(partition, Some(PartitionView::Active(store)));
    }

    pub fn remove(&self, partition: i32) {
        self.set(partition, None);
        self.set_position(partition, -1);
        self.set_lag(partition, -1);
    }

    /// The stream thread committed partition `partition` up to input offset `next_offset`
    /// (exclusive), and its store holds those effects.
    pub fn set_position(&self, partition: i32, next_offset: i64) {
        if let Some(slot) = self.slot(partition) {
            slot.1.next.store(next_offset, Ordering::Release);
        }
    }

    pub fn set_lag(&self, partition: i32, lag: i64) {
        if let Some(slot) = self.slot(partition) {
            slot.1.lag.store(lag, Ordering::Relaxed);
        }
    }

    pub fn lag(&self, partition: i32) -> Option<u64> {
        let lag = self.slot(partition)?.1.lag.load(Ordering::Relaxed);
        u64::try_from(lag).ok()
    }

    /// What [`LocalState::set_position`] last said for `partition`; `None` while unknown.
    pub fn position(&self, partition: i32) -> Option<i64> {
        let offset = self.slot(partition)?.1.next.load(Ordering::Acquire);
        (offset >= 0).then_some(offset)
    }

    /// A stream thread started (`true`) or ended (`false`).
    pub fn set_running(&self, running: bool) {
        if running {
            self.running.fetch_add(1, Ordering::AcqRel);
        } else {
            self.running.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn set_joined(&self, thread: usize) {
        self.joined.fetch_or(1 << thread, Ordering::AcqRel);
    }

    fn all_joined(&self) -> bool {
        let all = u64::MAX >> (64 - self.threads.clamp(1, 64));
        self.joined.load(Ordering::Acquire) & all == all
    }
}

impl LocalState {
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The input's partition count, over which keys are routed.
    pub fn input_partitions(&self) -> i32 {
        self.input_partitions
    }

    /// Routes a read of `key` to its partition: `read` runs against the store when the
    /// partition is active here, and the answer says where it is otherwise.
    pub fn route<T>(
        &self,
        key: &[u8],
        read: impl FnOnce(&Store) -> Result<Option<T>, StoreError>,
    ) -> Lookup<T> {
        let partition = partition_for_key(key, self.input_partitions);
        // The store is read under the slot's read guard: no `Arc` clone, so no second
        // shared write per read; a revoke waits for reads in flight.
        let view = self.slot(partition).map(Slot::read);
        match view.as_deref().and_then(Option::as_ref) {
            Some(PartitionView::Active(store)) => match read(store) {
                Ok(Some(found)) => Lookup::Found(found),
                Ok(None) => Lookup::NotFound,
                Err(error) => Lookup::Failed(error.to_string()),
            },
            Some(PartitionView::Restoring(progress)) => Lookup::Restoring {
                partition,
                restored: progress.restored.load(Ordering::Relaxed),
                total: progress.total.load(Ordering::Relaxed),
            },
            None => match self.owners.get(partition) {
                Some(owner) if owner.instance_id != self.instance_id => {
                    Lookup::Elsewhere { partition, owner }
                }
                _ => Lookup::Unavailable { partition },
            },
        }
    }

    /// Prometheus text exposition of the daemon's metrics and of the partitions here.
    pub fn metrics(&self) -> String {
        let (mut active, mut restoring) = (0.0, 0.0);
        let mut lags = Vec::new();
        let mut caches = Vec::new();
        for (partition, view) in self.partitions() {
            match view.as_ref() {
                Some(PartitionView::Active(store)) => {
                    active += 1.0;
                    if let Some(lag) = self.lag(partition) {
                        lags.push((partition.to_string(), lag as f64));
                    }
                    if let Some(stats) = store.cache_stats() {
                        caches.push((partition.to_string(), stats));
                    }
                }
                Some(PartitionView::Restoring(_)) => restoring += 1.0,
                None => {}
            }
        }
        let mut e = Exposition::new();
        self.metrics.render(&mut e);
        e.single(
            "hello_streams_active_tasks",
            Kind::Gauge,
            "partitions processed by this instance",
            active,
        )
        .single(
            "hello_streams_restoring_tasks",
            Kind::Gauge,
            "partitions restoring on this instance",
            restoring,
        );
        if !lags.is_empty() {
            e.family(
                "hello_streams_records_lag",
                Kind::Gauge,
                "input records beyond the stream thread's position, per active partition (Kafka Streams: records-lag)",
            );
            for (partition, lag) in &lags {
                e.sample(
                    "hello_streams_records_lag",
                    &[("partition", partition)],
                    *lag,
                );
            }
        }
        if !caches.is_empty() {
            let family = |e: &mut Exposition,
                          name: &str,
                          kind: Kind,
                          help: &str,
                          value: fn(&CacheStats) -> f64| {
                e.family(name, kind, help);
                for (partition, stats) in &caches {
                    e.sample(name, &[("partition", partition)], value(stats));
                }
            };
            family(
                &mut e,
                "hello_streams_query_cache_hits_total",
                Kind::Counter,
                "state reads the query cache answered, per active partition (since the partition came here)",
                |s| s.hits as f64,
            );
            family(
                &mut e,
                "hello_streams_query_cache_misses_total",
                Kind::Counter,
                "state reads that went to RocksDB, per active partition",
                |s| s.misses as f64,
            );
            family(
                &mut e,
                "hello_streams_query_cache_entries",
                Kind::Gauge,
                "keys the query cache holds, per active partition",
                |s| s.entries as f64,
            );
        }
        e.finish()
    }

    /// The position of the key's partition when it is active here and known. Read it before
    /// the store: the store is written before the position moves, so the value then read is
    /// at least as new as the position says.
    pub fn position_of(&self, key: &[u8]) -> Option<Position> {
        let partition = partition_for_key(key, self.input_partitions);
        let active = self
            .slot(partition)
            .is_some_and(|slot| matches!(slot.read().as_ref(), Some(PartitionView::Active(_))));
        let next = self.position(partition).filter(|_| active)?;
        Some(Position {
            partition,
            offset: next - 1,
        })
    }

    /// True once every stream thread runs and has its first assignment, none is stalled, and
    /// no partition here is restoring.
    pub fn ready(&self) -> bool {
        self.running.load(Ordering::Acquire) >= self.threads
            && self.metrics.stalled_threads.load(Ordering::Relaxed) == 0
            && self.all_joined()
            && !self
                .partitions()
                .any(|(_, v)| matches!(v.as_ref(), Some(PartitionView::Restoring(_))))
    }
}
