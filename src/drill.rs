//! `hello-streams drill`: the changelog-replay recovery drill.
//!
//! For each partition store under the state directory: take the store's state and its
//! checkpoint, rebuild the partition from the changelog up to that checkpoint, and compare key
//! by key. `--scratch DIR` rebuilds into DIR and leaves the live store alone (safe while the
//! instance runs: the store is opened read-only and the rebuild stops at the snapshot's
//! checkpoint). Without it the store itself is wiped and replayed in place, as an operator
//! would after losing a disk; the instance must be stopped for that. With windows on, the
//! window store is rebuilt and compared the same way, up to its own checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::engine::application::{Application, StoreId};
use crate::engine::store::restore::{RestoreError, RestoreLimits, RestoreProgress, Restorer};
use crate::engine::store::{partition_dir, Store, StoreError};
use crate::hello::domain::HelloState;
use crate::hello::windows::{StreamClock, WindowCounts};
use crate::hello::{views, window_store, HelloApp};

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("no state stores under {0}; run the drill where the instance keeps its state (app.state_dir)")]
    NoStores(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("kafka client failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    pub partition: i32,
    pub keys: u64,
    /// Windows compared (0 with windows off).
    pub windows: u64,
    pub records: u64,
    pub seconds: f64,
    pub mismatches: Vec<String>,
}

impl PartitionReport {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        }
    }
}

pub struct DrillOptions {
    pub partitions: Option<Vec<i32>>,
    pub scratch: Option<PathBuf>,
}

fn partitions_on_disk(config: &Config) -> Result<Vec<i32>, DrillError> {
    let root = config.state_dir.join(&config.application_id);
    let mut found: Vec<i32> = std::fs::read_dir(&root)
        .map_err(|_| DrillError::NoStores(root.clone()))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    found.sort_unstable();
    if found.is_empty() {
        return Err(DrillError::NoStores(root));
    }
    Ok(found)
}

/// A store's contents, as the drill compares them.
#[derive(Debug, PartialEq)]
struct Snapshot {
    states: BTreeMap<String, HelloState>,
    windows: BTreeMap<(String, i64), WindowCounts>,
    clock: StreamClock,
}

fn snapshot(store: &Store) -> Result<Snapshot, StoreError> {
    let mut states = BTreeMap::new();
    views::for_each_state(store, |key, state| {
        states.insert(key.to_owned(), state);
    })?;
    let mut windows = BTreeMap::new();
    window_store::for_each_window(store, |row| {
        windows.insert((row.key, row.start), row.counts);
    })?;
    Ok(Snapshot {
        states,
        windows,
        clock: window_store::clock(store)?,
    })
}

/// Runs the drill; progress and per-partition results go to stderr as it goes.
pub fn run(config: &Config, options: &DrillOptions) -> Result<Vec<PartitionReport>, DrillError> {
    let partitions = match &options.partitions {
        Some(p) => p.clone(),
        None => partitions_on_disk(config)?,
    };
    let ends = std::sync::Arc::new(crate::kafka::create_end_reader(config)?);
    let restorer = Restorer::new(config, ends)?;
    let app = HelloApp::new(config);
    let mut reports = Vec::new();
    for partition in partitions {
        let live = partition_dir(&config.state_dir, &config.application_id, partition);
        let (before, checkpoint) = {
            let store = if options.scratch.is_some() {
                Store::open_read_only(&live, app.stores())?
            } else {
                Store::open(&live, app.stores())?
            };
            let checkpoints = (0..store.stores())
                .map(|id| Ok(store.checkpoint(StoreId(id))?.unwrap_or(0)))
                .collect::<Result<Vec<u64>, StoreError>>()?;
            (snapshot(&store)?, checkpoints)
        };
        let target: PathBuf = match &options.scratch {
            Some(dir) => dir.join(&config.application_id).join(partition.to_string()),
            None => live.clone(),
        };
        Store::wipe(&target)?;
        let rebuilt = Store::open(&target, app.stores())?;
        let progress = RestoreProgress::default();
        let done = AtomicBool::new(false);
        let started = Instant::now();
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    eprint!("\r{}", progress_line(partition, &progress, started));
                }
            });
            let limits = RestoreLimits {
                until: Some(checkpoint.clone()),
                replay_from: None,
            };
            let result = restorer.restore_with(
                &rebuilt,
                partition,
                limits,
                &progress,
                &AtomicBool::new(false),
            );
            // Before the progress thread's last sleep ends: that is not replay time.
            let seconds = started.elapsed().as_secs_f64();
            done.store(true, Ordering::Relaxed);
            result.map(|r| (r, seconds))
        });
        let (restored, seconds) = result?;
        let after = snapshot(&rebuilt)?;
        let mut mismatches = compare(&before.states, &after.states);
        mismatches.extend(compare(&before.windows, &after.windows));
        if before.clock != after.clock {
            mismatches.push(format!(
                "stream clock: store {:?}, changelog {:?}",
                before.clock, after.clock
            ));
        }
        mismatches.truncate(20);
        let report = PartitionReport {
            partition,
            keys: before.states.len() as u64,
            windows: before.windows.len() as u64,
            records: restored.records,
            seconds,
            mismatches,
        };
        eprintln!(
            "\rpartition {partition}: {} keys, {} windows, {} records replayed in {:.2}s ({:.0} records/s), {} mismatches",
            report.keys, report.windows, report.records, report.seconds, report.rate(), report.mismatches.len()
        );
        if options.scratch.is_none() {
            // Bring the rebuilt store to the changelog's end so the instance starts current.
            let tail = restorer.restore(&rebuilt, partition, &progress, &AtomicBool::new(false))?;
            eprintln!(
                "partition {partition}: caught up {} more records to the changelog end",
                tail.records
            );
        }
        reports.push(report);
    }
    Ok(reports)
}

fn progress_line(partition: i32, progress: &RestoreProgress, started: Instant) -> String {
    let done = progress.restored.load(Ordering::Relaxed);
    let total = progress.total.load(Ordering::Relaxed).max(1);
    let width = 30;
    let filled = ((done as f64 / total as f64) * width as f64).min(width as f64) as usize;
    format!(
        "partition {partition} [{}{}] {done}/{total} records, {:.0} records/s   ",
        "#".repeat(filled),
        " ".repeat(width - filled),
        done as f64 / started.elapsed().as_secs_f64().max(1e-9)
    )
}

/// Keys whose value differs, or exists on one side only.
fn compare<K: std::fmt::Debug + Ord, V: std::fmt::Debug + PartialEq>(
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, state) in before {
        match after.get(key) {
            Some(rebuilt) if rebuilt == state => {}
            Some(rebuilt) => out.push(format!("{key:?}: store {state:?}, changelog {rebuilt:?}")),
            None => out.push(format!("{key:?}: in the store, not in the changelog")),
        }
    }
    for key in after.keys() {
        if !before.contains_key(key) {
            out.push(format!("{key:?}: in the changelog, not in the store"));
        }
    }
    out.sort();
    out
}
