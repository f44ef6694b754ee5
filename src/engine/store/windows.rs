//! The window store of a partition: two column families of the partition's RocksDB, the
//! windows by key (what the changelog holds) and their time index (local, rebuilt by a
//! restore), with the window changelog's own checkpoint in the default family. Byte layouts
//! are in [`crate::hello::windows`].

use rocksdb::{ColumnFamily, Direction, IteratorMode, ReadOptions, WriteBatch};

use super::{Store, StoreError, WINDOWS_CF, WINDOW_INDEX_CF};
use crate::hello::codec;
use crate::hello::windows::{self as layout, StreamClock, WindowCounts, CLOCK_KEY};

pub const WINDOWS_CHECKPOINT_KEY: &[u8] = b"\xffwindows-changelog-checkpoint";

/// One window's change inside a commit; `counts: None` deletes it (expiry).
pub struct WindowWrite<'a> {
    pub key: &'a [u8],
    pub start: i64,
    pub counts: Option<&'a WindowCounts>,
}

/// The window part of a transaction.
pub struct WindowCommit<'a> {
    pub writes: Vec<WindowWrite<'a>>,
    pub clock: Option<StreamClock>,
    /// The window changelog offset after this transaction's last record; `None`: it wrote none.
    pub checkpoint: Option<u64>,
}

/// A window as reads see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub key: String,
    pub start: i64,
    pub counts: WindowCounts,
}

impl Store {
    fn family(&self, name: &str) -> Option<&ColumnFamily> {
        self.db.cf_handle(name)
    }

    fn corrupt_window(&self, key: &[u8], source: layout::DecodeError) -> StoreError {
        StoreError::CorruptWindow {
            path: self.path.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        }
    }

    pub(super) fn add_windows(&self, batch: &mut WriteBatch, windows: &WindowCommit<'_>) {
        let (Some(data), Some(index)) = (self.family(WINDOWS_CF), self.family(WINDOW_INDEX_CF))
        else {
            return;
        };
        for write in &windows.writes {
            let key = layout::window_key(write.key, write.start);
            let index_key = layout::index_key(write.key, write.start);
            match write.counts {
                Some(counts) => {
                    let value = layout::encode_counts(counts);
                    batch.put_cf(data, key, value);
                    batch.put_cf(index, index_key, value);
                }
                None => {
                    batch.delete_cf(data, key);
                    batch.delete_cf(index, index_key);
                }
            }
        }
        if let Some(clock) = &windows.clock {
            batch.put_cf(data, CLOCK_KEY, layout::encode_clock(clock));
        }
        if let Some(checkpoint) = windows.checkpoint {
            batch.put(WINDOWS_CHECKPOINT_KEY, codec::encode_u64(checkpoint));
        }
    }

    /// The next window changelog offset to restore from.
    pub fn windows_checkpoint(&self) -> Result<Option<u64>, StoreError> {
        self.raw_u64(WINDOWS_CHECKPOINT_KEY)
    }

    pub fn clock(&self) -> Result<StreamClock, StoreError> {
        let Some(data) = self.family(WINDOWS_CF) else {
            return Ok(StreamClock::default());
        };
        match self
            .db
            .get_pinned_cf(data, CLOCK_KEY)
            .map_err(|e| self.io(e))?
        {
            None => Ok(StreamClock::default()),
            Some(bytes) => layout::decode_clock(&bytes).map_err(|e| self.corrupt_window(b"", e)),
        }
    }

    pub fn window(&self, key: &[u8], start: i64) -> Result<Option<WindowCounts>, StoreError> {
        let Some(data) = self.family(WINDOWS_CF) else {
            return Ok(None);
        };
        let stored = self
            .db
            .get_pinned_cf(data, layout::window_key(key, start))
            .map_err(|e| self.io(e))?;
        match stored {
            None => Ok(None),
            Some(bytes) => layout::decode_counts(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt_window(key, e)),
        }
    }

    /// The windows of `key` whose start lies in `from..=to`, in start order.
    pub fn windows_of(
        &self,
        key: &[u8],
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, WindowCounts)>, StoreError> {
        let mut out = Vec::new();
        let Some(data) = self.family(WINDOWS_CF) else {
            return Ok(out);
        };
        let first = layout::window_key(key, from);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(layout::window_key(key, to.saturating_add(1).max(to)));
        let mode = IteratorMode::From(&first, Direction::Forward);
        for item in self.db.iterator_cf_opt(data, options, mode) {
            let (stored_key, value) = item.map_err(|e| self.io(e))?;
            let Some((_, start)) = layout::split_window_key(&stored_key) else {
                continue;
            };
            if start > to {
                break;
            }
            let counts = layout::decode_counts(&value).map_err(|e| self.corrupt_window(key, e))?;
            out.push((start, counts));
        }
        Ok(out)
    }

    /// Every window whose start lies in `from..below`, in (start, key length, key) order,
    /// from the time index. `visit` returns false to stop.
    pub fn windows_by_time(
        &self,
        from: i64,
        below: i64,
        mut visit: impl FnMut(&[u8], i64, WindowCounts) -> bool,
    ) -> Result<(), StoreError> {
        let Some(index) = self.family(WINDOW_INDEX_CF) else {
            return Ok(());
        };
        if from >= below {
            return Ok(());
        }
        let first = layout::index_from(from);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(layout::index_from(below).to_vec());
        let mode = IteratorMode::From(&first, Direction::Forward);
        for item in self.db.iterator_cf_opt(index, options, mode) {
            let (stored_key, value) = item.map_err(|e| self.io(e))?;
            let Some((key, start)) = layout::split_index_key(&stored_key) else {
                continue;
            };
            let counts = layout::decode_counts(&value).map_err(|e| self.corrupt_window(key, e))?;
            if !visit(key, start, counts) {
                break;
            }
        }
        Ok(())
    }

    /// Applies window changelog records (restore): a value is put, a tombstone deletes, the
    /// clock record replaces the clock; `next_offset` becomes the window checkpoint.
    pub fn apply_window_changelog<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        next_offset: u64,
    ) -> Result<(), StoreError> {
        let (Some(data), Some(index)) = (self.family(WINDOWS_CF), self.family(WINDOW_INDEX_CF))
        else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        for (key, value) in records {
            if key == CLOCK_KEY {
                if let Some(value) = value {
                    batch.put_cf(data, CLOCK_KEY, value);
                }
                continue;
            }
            let Some((entity, start)) = layout::split_window_key(key) else {
                continue;
            };
            let index_key = layout::index_key(entity, start);
            match value {
                Some(value) => {
                    batch.put_cf(data, key, value);
                    batch.put_cf(index, index_key, value);
                }
                None => {
                    batch.delete_cf(data, key);
                    batch.delete_cf(index, index_key);
                }
            }
        }
        batch.put(WINDOWS_CHECKPOINT_KEY, codec::encode_u64(next_offset));
        self.write(batch)
    }

    /// Every window in key order (the state dump and the drill).
    pub fn for_each_window(&self, mut visit: impl FnMut(WindowRow)) -> Result<u64, StoreError> {
        let Some(data) = self.family(WINDOWS_CF) else {
            return Ok(0);
        };
        let mut visited = 0;
        for item in self.db.iterator_cf(data, IteratorMode::Start) {
            let (stored_key, value) = item.map_err(|e| self.io(e))?;
            let Some((key, start)) = layout::split_window_key(&stored_key) else {
                continue;
            };
            let counts = layout::decode_counts(&value).map_err(|e| self.corrupt_window(key, e))?;
            visit(WindowRow {
                key: String::from_utf8_lossy(key).into_owned(),
                start,
                counts,
            });
            visited += 1;
        }
        Ok(visited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(hellos: u64) -> WindowCounts {
        WindowCounts {
            hellos,
            events: hellos + 1,
            last_offset: hellos as i64,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn windows_commit_with_the_states_and_read_by_key_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for(dir.path(), true).unwrap();
        let (one, two) = (counts(1), counts(2));
        let commit = WindowCommit {
            writes: vec![
                WindowWrite {
                    key: b"alice",
                    start: 0,
                    counts: Some(&one),
                },
                WindowWrite {
                    key: b"alice",
                    start: 60_000,
                    counts: Some(&two),
                },
                WindowWrite {
                    key: b"bob",
                    start: 60_000,
                    counts: Some(&one),
                },
            ],
            clock: Some(StreamClock {
                stream_time: 61_000,
                emitted_before: i64::MIN,
            }),
            checkpoint: Some(7),
        };
        store.commit_with([], None, None, Some(&commit)).unwrap();
        assert_eq!(store.checkpoint().unwrap(), None);
        assert_eq!(store.windows_checkpoint().unwrap(), Some(7));
        assert_eq!(store.clock().unwrap().stream_time, 61_000);
        assert_eq!(
            store.windows_of(b"alice", 0, 60_000).unwrap(),
            vec![(0, one), (60_000, two)]
        );
        assert_eq!(
            store.windows_of(b"alice", 1, 60_000).unwrap(),
            vec![(60_000, two)]
        );
        assert_eq!(store.windows_of(b"alic", 0, i64::MAX).unwrap(), vec![]);
        let mut at_minute = Vec::new();
        store
            .windows_by_time(60_000, 60_001, |k, s, c| {
                at_minute.push((k.to_vec(), s, c.hellos));
                true
            })
            .unwrap();
        assert_eq!(
            at_minute,
            vec![(b"bob".to_vec(), 60_000, 1), (b"alice".to_vec(), 60_000, 2)]
        );

        let expire = WindowCommit {
            writes: vec![WindowWrite {
                key: b"alice",
                start: 0,
                counts: None,
            }],
            clock: None,
            checkpoint: Some(9),
        };
        store.commit_with([], None, None, Some(&expire)).unwrap();
        assert_eq!(store.window(b"alice", 0).unwrap(), None);
        let mut left = 0;
        store
            .windows_by_time(i64::MIN, i64::MAX, |_, _, _| {
                left += 1;
                true
            })
            .unwrap();
        assert_eq!(left, 2);
    }

    #[test]
    fn a_restore_applies_tombstones_as_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for(dir.path(), true).unwrap();
        let key = layout::window_key(b"carol", 120_000);
        let value = layout::encode_counts(&counts(3));
        let clock = layout::encode_clock(&StreamClock {
            stream_time: 130_000,
            emitted_before: 0,
        });
        store
            .apply_window_changelog(
                [(&key[..], Some(&value[..])), (CLOCK_KEY, Some(&clock[..]))],
                2,
            )
            .unwrap();
        assert_eq!(store.window(b"carol", 120_000).unwrap(), Some(counts(3)));
        assert_eq!(store.clock().unwrap().stream_time, 130_000);
        store.apply_window_changelog([(&key[..], None)], 3).unwrap();
        assert_eq!(store.window(b"carol", 120_000).unwrap(), None);
        assert_eq!(store.for_each_window(|_| {}).unwrap(), 0);
        assert_eq!(store.windows_checkpoint().unwrap(), Some(3));
        drop(store);
        let reopened = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(reopened.clock().unwrap().stream_time, 130_000);
    }
}
