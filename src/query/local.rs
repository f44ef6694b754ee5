//! The [`StateQuery`] of a running instance: its own partitions' stores, their restore
//! progress, and the owner table for everything else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::{Lookup, PartitionStatus, StateQuery, Status};
use crate::config::Config;
use crate::domain::validate_key;
use crate::ownership::OwnerTable;
use crate::partitioner::partition_for_key;
use crate::store::restore::RestoreProgress;
use crate::store::Store;
use crate::telemetry::Metrics;

#[derive(Clone)]
enum View {
    Restoring(Arc<RestoreProgress>),
    Active(Arc<Store>),
}

pub struct LocalState {
    instance_id: String,
    application_id: String,
    guarantee: &'static str,
    input_partitions: i32,
    views: RwLock<HashMap<i32, View>>,
    owners: Arc<OwnerTable>,
    metrics: Arc<Metrics>,
    running: AtomicBool,
    /// The group gave this instance its first assignment (possibly empty): until then no
    /// partition is known to be ours, and answering "ready" would invite wrong 503s.
    joined: AtomicBool,
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
            input_partitions,
            views: RwLock::new(HashMap::new()),
            owners,
            metrics,
            running: AtomicBool::new(false),
            joined: AtomicBool::new(false),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<i32, View>> {
        self.views.write().unwrap_or_else(|e| e.into_inner())
    }

    fn view(&self, partition: i32) -> Option<View> {
        self.views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .cloned()
    }

    pub fn set_restoring(&self, partition: i32, progress: Arc<RestoreProgress>) {
        self.write().insert(partition, View::Restoring(progress));
    }

    pub fn set_active(&self, partition: i32, store: Arc<Store>) {
        self.write().insert(partition, View::Active(store));
    }

    pub fn remove(&self, partition: i32) {
        self.write().remove(&partition);
    }

    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
    }

    pub fn set_joined(&self) {
        self.joined.store(true, Ordering::Release);
    }
}

impl StateQuery for LocalState {
    fn lookup(&self, key: &[u8]) -> Lookup {
        let key = match validate_key(Some(key)) {
            Ok(key) => key,
            Err(poison) => return Lookup::InvalidKey(poison),
        };
        let partition = partition_for_key(key.as_bytes(), self.input_partitions);
        match self.view(partition) {
            Some(View::Active(store)) => match store.get(key.as_bytes()) {
                Ok(Some(state)) => Lookup::Found(state),
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

    fn status(&self) -> Status {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        let mut partitions: Vec<PartitionStatus> = views
            .iter()
            .map(|(partition, view)| match view {
                View::Active(_) => PartitionStatus {
                    partition: *partition,
                    state: "active",
                    restored: 0,
                    restore_total: 0,
                    lag: None,
                },
                View::Restoring(p) => PartitionStatus {
                    partition: *partition,
                    state: "restoring",
                    restored: p.restored.load(Ordering::Relaxed),
                    restore_total: p.total.load(Ordering::Relaxed),
                    lag: None,
                },
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Status {
            instance_id: self.instance_id.clone(),
            application_id: self.application_id.clone(),
            processing_guarantee: self.guarantee.to_owned(),
            input_partitions: self.input_partitions,
            partitions,
        }
    }

    fn metrics(&self) -> String {
        let (mut active, mut restoring) = (0.0, 0.0);
        for view in self
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            match view {
                View::Active(_) => active += 1.0,
                View::Restoring(_) => restoring += 1.0,
            }
        }
        self.metrics.render(&[
            (
                "hello_streams_active_tasks",
                "partitions processed by this instance",
                active,
            ),
            (
                "hello_streams_restoring_tasks",
                "partitions restoring on this instance",
                restoring,
            ),
        ])
    }

    fn ready(&self) -> bool {
        self.running.load(Ordering::Acquire)
            && self.joined.load(Ordering::Acquire)
            && !self
                .views
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|v| matches!(v, View::Restoring(_)))
    }
}
