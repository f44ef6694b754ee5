//! Interactive queries: committed state served straight from the local stores.
//!
//! The servers ([`http`], [`resp`]) only speak their protocols; every answer comes from a
//! [`StateQuery`], which knows which partitions this instance owns, which are restoring and
//! where the others live. Reads see committed state only: the processor writes a store after
//! Kafka committed the transaction, so a read is at most one commit interval behind the input
//! and never shows an aborted change.

mod accept;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod fd_budget;
pub mod http;
pub mod http_forward;
pub mod http_server;
mod http_windows;
pub mod instant;
pub mod resp;
mod resp_commands;
pub mod resp_forward;
pub mod resp_protocol;
pub mod resp_reply;
pub mod settings;
pub mod tls;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hello::domain::{HelloState, Mood};
use crate::hello::windows::{WindowCounts, WindowSpec};

pub use crate::engine::local::{Lookup, Owner, Position};

/// The answer to "what is the state of key K?".
pub type StateLookup = Lookup<HelloState>;

/// A key's windows whose start lies in the range asked, in start order.
pub type WindowSeries = Vec<(i64, WindowCounts)>;

/// One of the keys with the highest helloCount among this instance's partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopKey {
    pub key: String,
    pub hello_count: u64,
    pub hello_total_count: u64,
    pub mood: Mood,
}

/// `GET /v1/top`: the top keys of the partitions active here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Top {
    pub partitions: Vec<i32>,
    /// Partitions this instance is restoring: their keys are missing from `top`.
    pub restoring: Vec<i32>,
    pub top: Vec<TopKey>,
}

/// The window settings as `/v1/status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsStatus {
    pub size_ms: i64,
    pub grace_ms: i64,
    pub retention_ms: i64,
    pub emit: &'static str,
}

impl WindowsStatus {
    pub fn new(spec: &WindowSpec) -> Self {
        WindowsStatus {
            size_ms: spec.size_ms,
            grace_ms: spec.grace_ms,
            retention_ms: spec.retention_ms,
            emit: spec.emit.as_str(),
        }
    }
}

/// One partition as `/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    pub partition: i32,
    /// "active" or "restoring".
    pub state: &'static str,
    pub restored: u64,
    pub restore_total: u64,
    pub lag: Option<i64>,
    /// While restoring: the changelog offset at which another producer's open transaction
    /// holds the restore back (it waits for the commit or abort).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_transaction_at: Option<i64>,
    /// With windows on: the largest record timestamp the partition has processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_time: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub instance_id: String,
    pub application_id: String,
    pub processing_guarantee: String,
    pub input_partitions: i32,
    pub partitions: Vec<PartitionStatus>,
    /// `None`: windows are off.
    pub windows: Option<WindowsStatus>,
}

/// What the query servers need from the rest of the daemon.
pub trait StateQuery: Send + Sync + 'static {
    fn lookup(&self, key: &[u8]) -> StateLookup;
    fn status(&self) -> Status;
    /// Prometheus text exposition of the daemon's metrics.
    fn metrics(&self) -> String;
    /// True once the stream thread runs and no owned partition is restoring.
    fn ready(&self) -> bool;
    /// The position of the key's partition when it is active here and known. Read it before
    /// [`StateQuery::lookup`]: the store is written before the position moves, so the state
    /// then read is at least as new as the position says.
    fn position_of(&self, _key: &[u8]) -> Option<Position> {
        None
    }
    /// The window settings; `None`: windows are off.
    fn window_spec(&self) -> Option<WindowSpec> {
        None
    }
    /// The key's windows starting in `from..=to` (`Found`, possibly empty).
    fn windows(&self, _key: &[u8], _from: i64, _to: i64) -> Lookup<WindowSeries> {
        Lookup::Failed("windows are off".to_owned())
    }
    /// The `n` keys with the highest helloCount in the partitions active here. Reads every
    /// state of those partitions: call it off the async runtime.
    fn top(&self, _n: usize) -> Top {
        Top {
            partitions: Vec::new(),
            restoring: Vec::new(),
            top: Vec::new(),
        }
    }
}

/// How often a read waiting for a position looks again. Commits come every commit interval
/// (100 ms by default), so this adds little delay and needs nothing from the stream thread.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// Waits, at most `wait`, until the key's partition has applied input offset `after` here
/// (HTTP `?after=`, RESP `AFTER`): the position reached, or the last one seen.
pub async fn wait_for_position(
    query: &dyn StateQuery,
    key: &[u8],
    after: i64,
    wait: Duration,
) -> Result<Position, Option<Position>> {
    let deadline = Instant::now() + wait;
    loop {
        let position = query.position_of(key);
        match position {
            Some(p) if p.offset >= after => return Ok(p),
            _ if Instant::now() >= deadline => return Err(position),
            _ => tokio::time::sleep(WAIT_POLL).await,
        }
    }
}

/// The JSON body of `GET /v1/state/{key}` (field names as the seed's API used them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateView<'a> {
    pub key: &'a str,
    pub hello_count: u64,
    pub hello_total_count: u64,
    pub mood: &'static str,
    pub revision: u64,
    /// Event time of the last applied event, ms since the Unix epoch.
    pub updated_at: i64,
}

impl<'a> StateView<'a> {
    pub fn new(key: &'a str, state: &HelloState) -> Self {
        StateView {
            key,
            hello_count: state.hello_count,
            hello_total_count: state.hello_total_count,
            mood: state.mood.as_str(),
            revision: state.revision,
            updated_at: state.updated_at_ms,
        }
    }
}
