//! The windowed part of a task: the open transaction's window changes and stream clock, and
//! what a commit adds (closed windows for emit-on-close, tombstones for expired windows).

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::sink::{InputRecord, Sink};
use crate::engine::store::{Store, WindowCommit, WindowWrite};
use crate::hello::domain::{Outcome, Poison, PoisonKind};
use crate::hello::windows::{self, Emit, Placement, StreamClock, WindowCounts, WindowSpec};

use crate::engine::task::TaskError;

/// What the window store did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windowed {
    Folded,
    Late,
    /// Already in the window: a replay after an at-least-once crash.
    Replayed,
}

pub struct WindowTask {
    spec: WindowSpec,
    partition: i32,
    store: Arc<Store>,
    /// The clock as the open transaction moved it, and as last committed.
    clock: StreamClock,
    committed_clock: StreamClock,
    /// Per key, the windows the open transaction changed; `None`: expired (deleted).
    overlay: HashMap<Box<str>, Vec<(i64, Option<WindowCounts>)>>,
    /// Expiry has deleted every window starting below this (committed / in this transaction).
    expired_before: i64,
    pending_expired_before: Option<i64>,
}

impl WindowTask {
    pub fn new(
        spec: WindowSpec,
        partition: i32,
        store: Arc<Store>,
    ) -> Result<WindowTask, TaskError> {
        let clock = store.clock()?;
        Ok(WindowTask {
            spec,
            partition,
            store,
            clock,
            committed_clock: clock,
            overlay: HashMap::new(),
            expired_before: i64::MIN,
            pending_expired_before: None,
        })
    }

    fn get(&self, key: &str, start: i64) -> Result<Option<WindowCounts>, TaskError> {
        if let Some(changed) = self.overlay.get(key) {
            if let Some((_, counts)) = changed.iter().find(|(s, _)| *s == start) {
                return Ok(*counts);
            }
        }
        Ok(self.store.window(key.as_bytes(), start)?)
    }

    fn put(&mut self, key: &str, start: i64, counts: Option<WindowCounts>) {
        let changed = self.overlay.entry(key.into()).or_default();
        match changed.iter_mut().find(|(s, _)| *s == start) {
            Some(slot) => slot.1 = counts,
            None => changed.push((start, counts)),
        }
    }

    /// Folds an event the key/value fold applied into its window, or dead-letters it as late.
    pub fn process(
        &mut self,
        record: &InputRecord<'_>,
        key: &str,
        outcome: Outcome,
        sink: &Sink,
    ) -> Result<Windowed, TaskError> {
        let start = match windows::place(&self.spec, &mut self.clock, record.timestamp_ms) {
            Placement::Window(start) => start,
            Placement::Late {
                window_end,
                stream_time,
            } => {
                let poison = Poison::new(
                    PoisonKind::Late,
                    format!(
                        "record timestamp {} falls in a window that ended at {window_end}, more than windows.grace_ms = {} before the partition's stream time {stream_time}; the key's state counted it, its window did not",
                        record.timestamp_ms, self.spec.grace_ms
                    ),
                );
                sink.dead_letter(record, &poison)?;
                return Ok(Windowed::Late);
            }
        };
        let previous = self.get(key, start)?;
        if previous.is_some_and(|p| p.last_offset >= record.offset) {
            return Ok(Windowed::Replayed);
        }
        let counts = windows::fold(previous, outcome, record.offset, record.timestamp_ms);
        sink.window_changelog(self.partition, key.as_bytes(), start, Some(&counts))?;
        if self.spec.emit == Emit::Update {
            sink.window_updated(
                self.partition,
                key,
                start,
                self.spec.size_ms,
                &counts,
                false,
            )?;
        }
        self.put(key, start, Some(counts));
        Ok(Windowed::Folded)
    }

    /// The windows starting in `from..below`, committed or changed in the open transaction,
    /// in (start, key) order.
    fn windows_between(
        &self,
        from: i64,
        below: i64,
    ) -> Result<Vec<(i64, Box<str>, WindowCounts)>, TaskError> {
        let mut found: Vec<(i64, Box<str>, WindowCounts)> = Vec::new();
        let mut stored = Vec::new();
        self.store
            .windows_by_time(from, below, |key, start, counts| {
                stored.push((start, String::from_utf8_lossy(key).into(), counts));
                true
            })?;
        for (start, key, counts) in stored {
            let key: Box<str> = key;
            if !self
                .overlay
                .get(&*key)
                .is_some_and(|c| c.iter().any(|(s, _)| *s == start))
            {
                found.push((start, key, counts));
            }
        }
        for (key, changed) in &self.overlay {
            for (start, counts) in changed {
                if let (true, Some(counts)) = (*start >= from && *start < below, counts) {
                    found.push((*start, key.clone(), *counts));
                }
            }
        }
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(found)
    }

    /// Before the commit: emits the windows the clock closed (emit-on-close), deletes those it
    /// expired, and writes the clock if it moved, all inside the transaction.
    pub fn before_commit(&mut self, sink: &Sink) -> Result<(), TaskError> {
        if self.spec.emit == Emit::Close {
            let below = self.spec.closed_before_start(self.clock.stream_time);
            if below > self.clock.emitted_before {
                for (start, key, counts) in
                    self.windows_between(self.clock.emitted_before, below)?
                {
                    sink.window_updated(
                        self.partition,
                        &key,
                        start,
                        self.spec.size_ms,
                        &counts,
                        true,
                    )?;
                }
                self.clock.emitted_before = below;
            }
        }
        let below = self.spec.expired_before_start(self.clock.stream_time);
        let from = self.pending_expired_before.unwrap_or(self.expired_before);
        if below > from {
            for (start, key, _) in self.windows_between(from, below)? {
                sink.window_changelog(self.partition, key.as_bytes(), start, None)?;
                self.put(&key, start, None);
            }
            self.pending_expired_before = Some(below);
        }
        if self.clock != self.committed_clock {
            sink.stream_clock(self.partition, &self.clock)?;
        }
        Ok(())
    }

    /// What the committed transaction changed, for the store's batch.
    pub fn commit(&self, checkpoint: Option<u64>) -> WindowCommit<'_> {
        let mut writes = Vec::new();
        for (key, changed) in &self.overlay {
            for (start, counts) in changed {
                writes.push(WindowWrite {
                    key: key.as_bytes(),
                    start: *start,
                    counts: counts.as_ref(),
                });
            }
        }
        WindowCommit {
            writes,
            clock: (self.clock != self.committed_clock).then_some(self.clock),
            checkpoint,
        }
    }

    /// The store holds the transaction now.
    pub fn committed(&mut self) {
        self.overlay.clear();
        self.committed_clock = self.clock;
        if let Some(below) = self.pending_expired_before.take() {
            self.expired_before = below;
        }
    }

    /// Drops the open transaction's changes; the clock comes from the store again, which a
    /// recovery may have caught up with the changelog.
    pub fn rollback(&mut self) -> Result<(), TaskError> {
        self.overlay.clear();
        self.pending_expired_before = None;
        self.clock = self.store.clock()?;
        self.committed_clock = self.clock;
        Ok(())
    }
}
