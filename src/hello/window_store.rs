//! Reads of a partition's window store ([`super::WINDOWS`]): the windows by key (what the
//! changelog holds) and their time index. Byte layouts are in [`super::windows`]. A store
//! opened with windows off has no window store and reads as empty.

use super::windows::{self as layout, StreamClock, WindowCounts, CLOCK_KEY};
use super::WINDOWS;
use crate::engine::store::{Store, StoreError};

/// A window as reads see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub key: String,
    pub start: i64,
    pub counts: WindowCounts,
}

fn present(store: &Store) -> bool {
    store.stores() > WINDOWS.0
}

pub fn clock(store: &Store) -> Result<StreamClock, StoreError> {
    if !present(store) {
        return Ok(StreamClock::default());
    }
    let clock = store.get(WINDOWS, CLOCK_KEY, layout::decode_clock)?;
    Ok(clock.unwrap_or_default())
}

pub fn window(store: &Store, key: &[u8], start: i64) -> Result<Option<WindowCounts>, StoreError> {
    if !present(store) {
        return Ok(None);
    }
    store.get(
        WINDOWS,
        &layout::window_key(key, start),
        layout::decode_counts,
    )
}

/// The windows of `key` whose start lies in `from..=to`, in start order.
pub fn windows_of(
    store: &Store,
    key: &[u8],
    from: i64,
    to: i64,
) -> Result<Vec<(i64, WindowCounts)>, StoreError> {
    let mut out = Vec::new();
    if !present(store) || from > to {
        return Ok(out);
    }
    let first = layout::window_key(key, from);
    let below = layout::window_key(key, to.saturating_add(1).max(to));
    store.scan(WINDOWS, &first, Some(&below), |stored_key, value| {
        let Some((_, start)) = layout::split_window_key(stored_key) else {
            return Ok(true);
        };
        if start > to {
            return Ok(false);
        }
        let counts =
            layout::decode_counts(value).map_err(|e| store.corrupt(WINDOWS, stored_key, e))?;
        out.push((start, counts));
        Ok(true)
    })?;
    Ok(out)
}

/// Every window whose start lies in `from..below`, in (start, key length, key) order, from
/// the time index. `visit` returns false to stop.
pub fn windows_by_time(
    store: &Store,
    from: i64,
    below: i64,
    mut visit: impl FnMut(&[u8], i64, WindowCounts) -> bool,
) -> Result<(), StoreError> {
    if !present(store) || from >= below {
        return Ok(());
    }
    let (first, end) = (layout::index_from(from), layout::index_from(below));
    store.scan_index(WINDOWS, &first, Some(&end), |index_key, value| {
        let Some((key, start)) = layout::split_index_key(index_key) else {
            return Ok(true);
        };
        let counts = layout::decode_counts(value).map_err(|e| store.corrupt(WINDOWS, key, e))?;
        Ok(visit(key, start, counts))
    })
}

/// Every window in key order (the state dump and the drill).
pub fn for_each_window(store: &Store, mut visit: impl FnMut(WindowRow)) -> Result<u64, StoreError> {
    let mut visited = 0;
    if !present(store) {
        return Ok(visited);
    }
    store.scan(WINDOWS, &[], None, |stored_key, value| {
        let Some((key, start)) = layout::split_window_key(stored_key) else {
            return Ok(true);
        };
        let counts = layout::decode_counts(value).map_err(|e| store.corrupt(WINDOWS, key, e))?;
        visit(WindowRow {
            key: String::from_utf8_lossy(key).into_owned(),
            start,
            counts,
        });
        visited += 1;
        Ok(true)
    })?;
    Ok(visited)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::application::Application;
    use crate::engine::store::Write;
    use crate::hello::HelloApp;

    fn counts(hellos: u64) -> WindowCounts {
        WindowCounts {
            hellos,
            events: hellos + 1,
            last_offset: hellos as i64,
            updated_at_ms: 0,
        }
    }

    fn open(dir: &std::path::Path) -> Store {
        let config = crate::config::load(&crate::config::Sources::default()).unwrap();
        Store::open(dir, HelloApp::new(&config).stores()).unwrap()
    }

    #[test]
    fn windows_read_by_key_and_by_time_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (one, two) = (
            layout::encode_counts(&counts(1)),
            layout::encode_counts(&counts(2)),
        );
        let clock = layout::encode_clock(&StreamClock {
            stream_time: 61_000,
            emitted_before: i64::MIN,
        });
        let keys = [
            layout::window_key(b"alice", 0),
            layout::window_key(b"alice", 60_000),
            layout::window_key(b"bob", 60_000),
        ];
        let commit = |entries: &[(&[u8], Option<&[u8]>)], checkpoint| {
            let writes = entries.iter().map(|&(key, value)| Write {
                store: WINDOWS,
                key,
                value,
            });
            store.commit(writes, &[None, Some(checkpoint)]).unwrap();
        };
        commit(
            &[
                (&keys[0], Some(&one)),
                (&keys[1], Some(&two)),
                (&keys[2], Some(&one)),
                (CLOCK_KEY, Some(&clock)),
            ],
            7,
        );
        assert_eq!(clock_of(&store).stream_time, 61_000);
        assert_eq!(
            windows_of(&store, b"alice", 0, 60_000).unwrap(),
            vec![(0, counts(1)), (60_000, counts(2))]
        );
        assert_eq!(
            windows_of(&store, b"alice", 1, 60_000).unwrap(),
            vec![(60_000, counts(2))]
        );
        assert_eq!(windows_of(&store, b"alic", 0, i64::MAX).unwrap(), vec![]);
        let mut at_minute = Vec::new();
        windows_by_time(&store, 60_000, 60_001, |k, s, c| {
            at_minute.push((k.to_vec(), s, c.hellos));
            true
        })
        .unwrap();
        assert_eq!(
            at_minute,
            vec![(b"bob".to_vec(), 60_000, 1), (b"alice".to_vec(), 60_000, 2)]
        );
        commit(&[(&keys[0], None)], 9);
        assert_eq!(window(&store, b"alice", 0).unwrap(), None);
        assert_eq!(for_each_window(&store, |_| {}).unwrap(), 2);
        let mut left = 0;
        windows_by_time(&store, i64::MIN, i64::MAX, |_, _, _| {
            left += 1;
            true
        })
        .unwrap();
        assert_eq!(left, 2);
    }

    fn clock_of(store: &Store) -> StreamClock {
        clock(store).unwrap()
    }

    #[test]
    fn a_restore_applies_tombstones_as_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let key = layout::window_key(b"carol", 120_000);
        let value = layout::encode_counts(&counts(3));
        let clock = layout::encode_clock(&StreamClock {
            stream_time: 130_000,
            emitted_before: 0,
        });
        store
            .apply_changelog(
                WINDOWS,
                [(&key[..], Some(&value[..])), (CLOCK_KEY, Some(&clock[..]))],
                2,
            )
            .unwrap();
        assert_eq!(window(&store, b"carol", 120_000).unwrap(), Some(counts(3)));
        assert_eq!(clock_of(&store).stream_time, 130_000);
        store
            .apply_changelog(WINDOWS, [(&key[..], None)], 3)
            .unwrap();
        assert_eq!(window(&store, b"carol", 120_000).unwrap(), None);
        assert_eq!(for_each_window(&store, |_| {}).unwrap(), 0);
        let mut indexed = 0;
        windows_by_time(&store, i64::MIN, i64::MAX, |_, _, _| {
            indexed += 1;
            true
        })
        .unwrap();
        assert_eq!(indexed, 0);
        assert_eq!(store.checkpoint(WINDOWS).unwrap(), Some(3));
    }
}
