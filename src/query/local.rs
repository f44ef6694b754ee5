//! The [`StateQuery`] of a running instance: its own partitions' stores, their restore
//! progress, and the owner table for everything else.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::{
    Lookup, PartitionStatus, Position as AnswerPosition, StateQuery, Status, Top, TopKey,
    WindowSeries, WindowsStatus,
};
use crate::config::Config;
use crate::engine::store::restore::RestoreProgress;
use crate::engine::store::{CacheStats, Store, StoreError};
use crate::hello::domain::validate_key;
use crate::hello::windows::WindowSpec;
use crate::hello::{views, window_store};
use crate::ownership::OwnerTable;
use crate::partitioner::partition_for_key;
use crate::telemetry::prometheus::{Exposition, Kind};
use crate::telemetry::Metrics;

enum View {
    Restoring(Arc<RestoreProgress>),
    Active(Arc<Store>),
}

/// One partition's view, alone on its cache line. A read takes the slot's lock (a write to
/// its reader count); with one lock for all partitions, the query threads kept writing the
/// same line and two threads read no faster than one.
#[repr(align(64))]
struct Slot(RwLock<Option<View>>, Position);

/// `next`: the input offset after the last record whose effect the partition's store holds
/// (what a read of it reflects); `lag`: input records beyond the stream thread's position.
/// -1: unknown.
struct Position {
    next: AtomicI64,
    lag: AtomicI64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot(
            RwLock::default(),
            Position {
                next: AtomicI64::new(-1),
                lag: AtomicI64::new(-1),
            },
        )
    }
}

impl Slot {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<View>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct LocalState {
    instance_id: String,
    application_id: String,
    guarantee: &'static str,
    windows: Option<WindowSpec>,
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
            application_id: config.application_id.clone(),
            guarantee: config.guarantee.as_str(),
            windows: config.windows,
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
    fn set(&self, partition: i32, view: Option<View>) {
        if let Some(slot) = self.slot(partition) {
            *slot.0.write().unwrap_or_else(|e| e.into_inner()) = view;
        }
    }

    fn views(&self) -> impl Iterator<Item = (i32, std::sync::RwLockReadGuard<'_, Option<View>>)> {
        self.views
            .iter()
            .enumerate()
            .map(|(partition, slot)| (partition as i32, slot.read()))
    }

    pub fn set_restoring(&self, partition: i32, progress: Arc<RestoreProgress>) {
        self.set(partition, Some(View::Restoring(progress)));
    }

    pub fn set_active(&self, partition: i32, store: Arc<Store>) {
        self.set(partition, Some(View::Active(store)));
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

    fn lag(&self, partition: i32) -> Option<u64> {
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
    /// Routes a read of `key` to its partition: `read` runs against the store when the
    /// partition is active here, and the answer says where it is otherwise.
    fn routed<T>(
        &self,
        key: &[u8],
        read: impl FnOnce(&Store, &str) -> Result<Option<T>, StoreError>,
    ) -> Lookup<T> {
        let key = match validate_key(Some(key)) {
            Ok(key) => key,
            Err(poison) => return Lookup::InvalidKey(poison),
        };
        let partition = partition_for_key(key.as_bytes(), self.input_partitions);
        // The store is read under the slot's read guard: no `Arc` clone, so no second
        // shared write per read; a revoke waits for reads in flight.
        let view = self.slot(partition).map(Slot::read);
        match view.as_deref().and_then(Option::as_ref) {
            Some(View::Active(store)) => match read(store, key) {
                Ok(Some(found)) => Lookup::Found(found),
                Ok(None) => Lookup::NotFound,
                Err(error) => Lookup::Failed(error.to_string()),
            },
            Some(View::Restoring(progress)) => Lookup::Restoring {
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
}

impl StateQuery for LocalState {
    fn lookup(&self, key: &[u8]) -> Lookup {
        self.routed(key, |store, key| views::state(store, key.as_bytes()))
    }

    fn window_spec(&self) -> Option<WindowSpec> {
        self.windows
    }

    fn windows(&self, key: &[u8], from: i64, to: i64) -> Lookup<WindowSeries> {
        if self.windows.is_none() {
            return Lookup::Failed("windows are off ([windows] enabled = false)".to_owned());
        }
        self.routed(key, |store, key| {
            window_store::windows_of(store, key.as_bytes(), from, to).map(Some)
        })
    }

    fn top(&self, n: usize) -> Top {
        let mut top = Top {
            partitions: Vec::new(),
            restoring: Vec::new(),
            top: Vec::new(),
        };
        // A bounded heap would save memory for large n; n is small (the dashboard asks 10).
        for (partition, view) in self.views() {
            match view.as_ref() {
                Some(View::Active(store)) => {
                    top.partitions.push(partition);
                    let scanned = views::for_each_state(store, |key, state| {
                        top.top.push(TopKey {
                            key: key.to_owned(),
                            hello_count: state.hello_count,
                            hello_total_count: state.hello_total_count,
                            mood: state.mood,
                        });
                        if top.top.len() >= 4 * n.max(64) {
                            keep_top(&mut top.top, n);
                        }
                    });
                    if let Err(error) = scanned {
                        tracing::warn!(partition, %error, "top keys: store read failed");
                    }
                }
                Some(View::Restoring(_)) => top.restoring.push(partition),
                None => {}
            }
        }
        keep_top(&mut top.top, n);
        top
    }

    fn status(&self) -> Status {
        let partitions: Vec<PartitionStatus> = self
            .views()
            .filter_map(|(partition, view)| match view.as_ref()? {
                View::Active(store) => Some(PartitionStatus {
                    partition,
                    state: "active",
                    restored: 0,
                    restore_total: 0,
                    lag: self.lag(partition).map(|l| l as i64),
                    waiting_for_transaction_at: None,
                    stream_time: self
                        .windows
                        .and_then(|_| window_store::clock(store).ok())
                        .map(|clock| clock.stream_time)
                        .filter(|&t| t != i64::MIN),
                }),
                View::Restoring(p) => Some(PartitionStatus {
                    partition,
                    state: "restoring",
                    restored: p.restored.load(Ordering::Relaxed),
                    restore_total: p.total.load(Ordering::Relaxed),
                    lag: None,
                    waiting_for_transaction_at: p.waiting_for_transaction_at(),
                    stream_time: None,
                }),
            })
            .collect();
        Status {
            instance_id: self.instance_id.clone(),
            application_id: self.application_id.clone(),
            processing_guarantee: self.guarantee.to_owned(),
            input_partitions: self.input_partitions,
            partitions,
            windows: self.windows.as_ref().map(WindowsStatus::new),
        }
    }

    fn metrics(&self) -> String {
        let (mut active, mut restoring) = (0.0, 0.0);
        let mut lags = Vec::new();
        let mut caches = Vec::new();
        for (partition, view) in self.views() {
            match view.as_ref() {
                Some(View::Active(store)) => {
                    active += 1.0;
                    if let Some(lag) = self.lag(partition) {
                        lags.push((partition.to_string(), lag as f64));
                    }
                    if let Some(stats) = store.cache_stats() {
                        caches.push((partition.to_string(), stats));
                    }
                }
                Some(View::Restoring(_)) => restoring += 1.0,
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

    fn position_of(&self, key: &[u8]) -> Option<AnswerPosition> {
        let partition = partition_for_key(key, self.input_partitions);
        let active = self
            .slot(partition)
            .is_some_and(|slot| matches!(slot.read().as_ref(), Some(View::Active(_))));
        let next = self.position(partition).filter(|_| active)?;
        Some(AnswerPosition {
            partition,
            offset: next - 1,
        })
    }

    fn ready(&self) -> bool {
        self.running.load(Ordering::Acquire) >= self.threads
            && self.metrics.stalled_threads.load(Ordering::Relaxed) == 0
            && self.all_joined()
            && !self
                .views()
                .any(|(_, v)| matches!(v.as_ref(), Some(View::Restoring(_))))
    }
}

/// Sorts by helloCount (highest first, then key) and keeps the first `n`.
fn keep_top(keys: &mut Vec<TopKey>, n: usize) {
    keys.sort_by(|a, b| {
        b.hello_count
            .cmp(&a.hello_count)
            .then_with(|| a.key.cmp(&b.key))
    });
    keys.truncate(n);
}
