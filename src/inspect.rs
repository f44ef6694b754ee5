//! Operator reads of the local stores (`hello-streams state get|dump`), without Kafka and
//! without stopping a running instance: RocksDB's read-only mode takes no lock.

use std::io::Write;
use std::path::PathBuf;

use crate::config::Config;
use crate::engine::application::Application;
use crate::engine::store::{partition_dir, Store, StoreError};
use crate::hello::domain::HelloState;
use crate::hello::{views, window_store, HelloApp};
use crate::partitioner::partition_for_key;
use crate::query::StateView;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no state stores under {0}; is app.state_dir right?")]
    NoStores(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
}

/// Partition numbers that have a store directory, ascending.
fn partitions(config: &Config) -> Result<Vec<i32>, InspectError> {
    let root = config.state_dir.join(&config.application_id);
    let mut found: Vec<i32> = std::fs::read_dir(&root)
        .map_err(|_| InspectError::NoStores(root.clone()))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    found.sort_unstable();
    if found.is_empty() {
        return Err(InspectError::NoStores(root));
    }
    Ok(found)
}

/// Prints a key's state as JSON; `Ok(false)` when no store holds it.
pub fn get(config: &Config, key: &str, out: &mut impl Write) -> Result<bool, InspectError> {
    let stores = partitions(config)?;
    // The key lives in the partition the producer's partitioner picked; the partition count
    // is the number of stores unless some were never assigned here, so look in all of them.
    let count = stores.iter().max().map_or(1, |m| m + 1);
    let home = partition_for_key(key.as_bytes(), count);
    let mut order = vec![home];
    order.extend(stores.iter().copied().filter(|p| *p != home));
    for partition in order {
        let path = partition_dir(&config.state_dir, &config.application_id, partition);
        if !path.exists() {
            continue;
        }
        let store = Store::open_read_only(&path, HelloApp::new(config).stores())?;
        if let Some(state) = views::state(&store, key.as_bytes())? {
            serde_json::to_writer(&mut *out, &StateView::new(key, &state))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Prints every key's state, one JSON object per line; returns the number of keys.
pub fn dump(config: &Config, out: &mut impl Write) -> Result<u64, InspectError> {
    let mut failed = None;
    let total = for_each_state(config, |key, state| {
        if failed.is_none() {
            let written = serde_json::to_writer(&mut *out, &StateView::new(key, state))
                .map_err(std::io::Error::from)
                .and_then(|_| writeln!(out));
            failed = written.err();
        }
    })?;
    match failed {
        Some(error) => Err(error.into()),
        None => Ok(total),
    }
}

/// Prints every window of every local store, one JSON object per line (window start and end
/// in epoch ms, as `/v1/windows` gives them); returns the number of windows.
pub fn dump_windows(config: &Config, out: &mut impl Write) -> Result<u64, InspectError> {
    let size_ms = config.windows.map_or(0, |w| w.size_ms);
    let mut total = 0;
    for partition in partitions(config)? {
        let path = partition_dir(&config.state_dir, &config.application_id, partition);
        let store = Store::open_read_only(&path, HelloApp::new(config).stores())?;
        let clock = window_store::clock(&store)?;
        let mut failed = None;
        total += window_store::for_each_window(&store, |row| {
            if failed.is_some() {
                return;
            }
            let line = serde_json::json!({
                "key": row.key,
                "partition": partition,
                "start": row.start,
                "end": row.start.saturating_add(size_ms),
                "hellos": row.counts.hellos,
                "events": row.counts.events,
                "streamTime": clock.stream_time,
            });
            failed = writeln!(out, "{line}").err();
        })?;
        if let Some(error) = failed {
            return Err(error.into());
        }
    }
    Ok(total)
}

/// Visits every key's state in every local store (as readers see it, punctuation epoch
/// applied); returns the number of keys.
pub fn for_each_state(
    config: &Config,
    mut visit: impl FnMut(&str, &HelloState),
) -> Result<u64, InspectError> {
    let mut total = 0;
    for partition in partitions(config)? {
        let path = partition_dir(&config.state_dir, &config.application_id, partition);
        let store = Store::open_read_only(&path, HelloApp::new(config).stores())?;
        total += views::for_each_state(&store, |key, state| visit(key, &state))?;
    }
    Ok(total)
}
