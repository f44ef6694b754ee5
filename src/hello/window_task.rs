//! The windowed fold of a partition: every event the key/value fold applied goes into its
//! key's window, and what a commit adds (closed windows for emit-on-close, tombstones for
//! expired windows, the stream clock).

use super::domain::{Outcome, PoisonKind};
use super::window_store;
use super::windows::{self, Emit, Placement, StreamClock, WindowCounts, WindowSpec};
use super::{WINDOWS, WINDOWS_OUTPUT};
use crate::engine::context::Context;
use crate::engine::sink::InputRecord;
use crate::engine::store::{Store, StoreError};
use crate::engine::task::TaskError;

pub struct WindowTask {
    spec: WindowSpec,
    /// The clock as the open transaction moved it, and as last committed.
    clock: StreamClock,
    committed_clock: StreamClock,
    /// Expiry has deleted every window starting below this (committed / in this transaction).
    expired_before: i64,
    pending_expired_before: Option<i64>,
}

impl WindowTask {
    pub fn new(spec: WindowSpec, store: &Store) -> Result<WindowTask, StoreError> {
        let clock = window_store::clock(store)?;
        Ok(WindowTask {
            spec,
            clock,
            committed_clock: clock,
            expired_before: i64::MIN,
            pending_expired_before: None,
        })
    }

    /// Folds an event the key/value fold applied into its window, or dead-letters it as late.
    pub fn process(
        &mut self,
        record: &InputRecord<'_>,
        key: &str,
        outcome: Outcome,
        ctx: &mut Context<'_>,
    ) -> Result<(), TaskError> {
        let start = match windows::place(&self.spec, &mut self.clock, record.timestamp_ms) {
            Placement::Window(start) => start,
            Placement::Late {
                window_end,
                stream_time,
            } => {
                let message = format!(
                    "record timestamp {} falls in a window that ended at {window_end}, more than windows.grace_ms = {} before the partition's stream time {stream_time}; the key's state counted it, its window did not",
                    record.timestamp_ms, self.spec.grace_ms
                );
                ctx.dead_letter(record, PoisonKind::Late.as_str(), &message)?;
                ctx.work().late += 1;
                return Ok(());
            }
        };
        let window_key = windows::window_key(key.as_bytes(), start);
        let previous = ctx.get(WINDOWS, &window_key, windows::decode_counts)?;
        if previous.is_some_and(|p| p.last_offset >= record.offset) {
            // Already in the window: a replay after an at-least-once crash.
            return Ok(());
        }
        let counts = windows::fold(previous, outcome, record.offset, record.timestamp_ms);
        ctx.put(WINDOWS, &window_key, &windows::encode_counts(&counts))?;
        if self.spec.emit == Emit::Update {
            self.emit(ctx, key, start, &counts, false)?;
        }
        Ok(())
    }

    fn emit(
        &self,
        ctx: &Context<'_>,
        key: &str,
        start: i64,
        counts: &WindowCounts,
        closed: bool,
    ) -> Result<(), TaskError> {
        let value = windows::window_updated(key, start, self.spec.size_ms, counts, closed);
        ctx.send(WINDOWS_OUTPUT, key.as_bytes(), &value)
    }

    /// The windows starting in `from..below`, committed or changed in the open transaction,
    /// in (start, key) order.
    fn windows_between(
        &self,
        ctx: &Context<'_>,
        from: i64,
        below: i64,
    ) -> Result<Vec<(i64, Box<str>, WindowCounts)>, TaskError> {
        let mut found = Vec::new();
        if from >= below {
            return Ok(found);
        }
        let (first, end) = (windows::index_from(from), windows::index_from(below));
        ctx.scan_index(WINDOWS, &first, &end, |index_key, value| {
            let Some((key, start)) = windows::split_index_key(index_key) else {
                return Ok(());
            };
            let counts = windows::decode_counts(value).map_err(|e| ctx.corrupt(WINDOWS, key, e))?;
            found.push((start, String::from_utf8_lossy(key).into(), counts));
            Ok(())
        })?;
        Ok(found)
    }

    /// Before the commit: emits the windows the clock closed (emit-on-close), deletes those it
    /// expired, and writes the clock if it moved, all inside the transaction.
    pub fn before_commit(&mut self, ctx: &mut Context<'_>) -> Result<(), TaskError> {
        if self.spec.emit == Emit::Close {
            let below = self.spec.closed_before_start(self.clock.stream_time);
            if below > self.clock.emitted_before {
                for (start, key, counts) in
                    self.windows_between(ctx, self.clock.emitted_before, below)?
                {
                    self.emit(ctx, &key, start, &counts, true)?;
                }
                self.clock.emitted_before = below;
            }
        }
        let below = self.spec.expired_before_start(self.clock.stream_time);
        let from = self.pending_expired_before.unwrap_or(self.expired_before);
        if below > from {
            for (start, key, _) in self.windows_between(ctx, from, below)? {
                ctx.delete(WINDOWS, &windows::window_key(key.as_bytes(), start))?;
            }
            self.pending_expired_before = Some(below);
        }
        if self.clock != self.committed_clock {
            ctx.put(
                WINDOWS,
                windows::CLOCK_KEY,
                &windows::encode_clock(&self.clock),
            )?;
        }
        Ok(())
    }

    /// The store holds the transaction now.
    pub fn committed(&mut self) {
        self.committed_clock = self.clock;
        if let Some(below) = self.pending_expired_before.take() {
            self.expired_before = below;
        }
    }

    /// Drops the open transaction's changes; the clock comes from the store again, which a
    /// recovery may have caught up with the changelog.
    pub fn rolled_back(&mut self, store: &Store) -> Result<(), StoreError> {
        self.pending_expired_before = None;
        self.clock = window_store::clock(store)?;
        self.committed_clock = self.clock;
        Ok(())
    }
}
