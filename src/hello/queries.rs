//! The hello application's reads ([`StateQuery`]) over the engine's [`LocalState`]: a key's
//! state and windows, the top keys, and the status with each partition's stream time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::domain::validate_key;
use super::windows::WindowSpec;
use super::{views, window_store};
use crate::config::Config;
use crate::engine::local::{LocalState, PartitionView, Position};
use crate::engine::store::{Store, StoreError};
use crate::query::{
    Lookup, PartitionStatus, StateLookup, StateQuery, Status, Top, TopKey, WindowSeries,
    WindowsStatus,
};

pub struct HelloQueries {
    local: Arc<LocalState>,
    application_id: String,
    guarantee: &'static str,
    windows: Option<WindowSpec>,
}

impl HelloQueries {
    pub fn new(config: &Config, local: Arc<LocalState>) -> HelloQueries {
        HelloQueries {
            local,
            application_id: config.application_id.clone(),
            guarantee: config.guarantee.as_str(),
            windows: config.windows,
        }
    }

    /// Routes a read of a valid key to its partition.
    fn routed<T>(
        &self,
        key: &[u8],
        read: impl FnOnce(&Store, &str) -> Result<Option<T>, StoreError>,
    ) -> Lookup<T> {
        match validate_key(Some(key)) {
            Ok(key) => self.local.route(key.as_bytes(), |store| read(store, key)),
            Err(poison) => Lookup::InvalidKey(poison.message),
        }
    }
}

impl StateQuery for HelloQueries {
    fn lookup(&self, key: &[u8]) -> StateLookup {
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
        for (partition, view) in self.local.partitions() {
            match view.as_ref() {
                Some(PartitionView::Active(store)) => {
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
                Some(PartitionView::Restoring(_)) => top.restoring.push(partition),
                None => {}
            }
        }
        keep_top(&mut top.top, n);
        top
    }

    fn status(&self) -> Status {
        let partitions: Vec<PartitionStatus> = self
            .local
            .partitions()
            .filter_map(|(partition, view)| match view.as_ref()? {
                PartitionView::Active(store) => Some(PartitionStatus {
                    partition,
                    state: "active",
                    restored: 0,
                    restore_total: 0,
                    lag: self.local.lag(partition).map(|l| l as i64),
                    waiting_for_transaction_at: None,
                    stream_time: self
                        .windows
                        .and_then(|_| window_store::clock(store).ok())
                        .map(|clock| clock.stream_time)
                        .filter(|&t| t != i64::MIN),
                }),
                PartitionView::Restoring(p) => Some(PartitionStatus {
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
            instance_id: self.local.instance_id().to_owned(),
            application_id: self.application_id.clone(),
            processing_guarantee: self.guarantee.to_owned(),
            input_partitions: self.local.input_partitions(),
            partitions,
            windows: self.windows.as_ref().map(WindowsStatus::new),
        }
    }

    fn metrics(&self) -> String {
        self.local.metrics()
    }

    fn position_of(&self, key: &[u8]) -> Option<Position> {
        self.local.position_of(key)
    }

    fn ready(&self) -> bool {
        self.local.ready()
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
