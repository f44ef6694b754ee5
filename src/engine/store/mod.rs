//! The RocksDB state store of one partition, holding committed state only.
//!
//! The processor keeps the changes of an open transaction in memory and hands them to
//! [`Store::commit`] after Kafka accepted the transaction; state and the changelog offset it
//! reflects (the checkpoint) land in one `WriteBatch`, so the store is always a prefix of the
//! changelog and a restore replays only what lies past the checkpoint.

pub mod cache;
pub mod restore;
pub mod windows;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch,
    WriteBufferManager, WriteOptions, DB,
};

use crate::hello::codec::{self, CHECKPOINT_KEY, EPOCH_KEY};
use crate::hello::domain::HelloState;
pub use cache::CacheStats;
use cache::{Cached, StateCache};
pub use windows::{WindowCommit, WindowRow, WindowWrite};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state store at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wipe state store at {path}")]
    Wipe {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store at {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("state store at {path} holds a corrupt value for key {key:?}")]
    Corrupt {
        path: PathBuf,
        key: String,
        #[source]
        source: codec::DecodeError,
    },
    #[error("state store at {path} holds a corrupt window value for key {key:?}")]
    CorruptWindow {
        path: PathBuf,
        key: String,
        #[source]
        source: crate::hello::windows::DecodeError,
    },
}

/// Why a store could not be opened, as far as deciding what to do goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// Another handle holds the store's lock (a closing one of this process, usually).
    Locked,
    /// RocksDB found the store damaged (or files it lists missing): rebuild it.
    Corrupt,
    /// The machine refused (descriptors, permissions, space, I/O): retry or fail, never delete.
    Resource,
}

impl StoreError {
    /// For an open failure, what kind it is; `None` for other errors.
    pub fn open_failure(&self) -> Option<OpenFailure> {
        let StoreError::Open { source, .. } = self else {
            return None;
        };
        Some(classify_open_error(source))
    }
}

fn classify_open_error(error: &rocksdb::Error) -> OpenFailure {
    let text = error.to_string();
    if error.kind() == rocksdb::ErrorKind::Corruption {
        return OpenFailure::Corrupt;
    }
    if error.kind() == rocksdb::ErrorKind::IOError {
        // "While lock file: <dir>/LOCK: Resource temporarily unavailable" (another process),
        // "lock hold by current process ... <dir>/LOCK" (a handle of this one).
        if text.contains("/LOCK") {
            return OpenFailure::Locked;
        }
        // A file the manifest lists (or CURRENT names) is gone: damaged, not short of space.
        if text.contains("No such file or directory") {
            return OpenFailure::Corrupt;
        }
    }
    OpenFailure::Resource
}

/// One key's change inside a commit.
pub struct Change<'a> {
    pub key: &'a [u8],
    pub state: &'a HelloState,
}

pub struct Store {
    db: DB,
    path: PathBuf,
    /// Committed punctuation epoch, cached so reads need one RocksDB lookup.
    epoch: AtomicU64,
    /// States that queries read, kept fresh by commits; `None`: every read goes to RocksDB.
    cache: Option<StateCache>,
}

/// Memory every store of the process shares, so it stays the same however many partitions an
/// instance owns (BENCHMARKS.md, "Why the code is the way it is"). Hot keys for queries have
/// their own cache.
const BLOCK_CACHE_BYTES: usize = 8 << 20;
const MEMTABLE_BUDGET_BYTES: usize = 8 << 20;

fn shared_block_cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Cache::new_lru_cache(BLOCK_CACHE_BYTES))
}

/// Once all memtables together pass the budget, the store being written flushes its own.
fn shared_write_buffers() -> &'static WriteBufferManager {
    static MANAGER: OnceLock<WriteBufferManager> = OnceLock::new();
    MANAGER
        .get_or_init(|| WriteBufferManager::new_write_buffer_manager(MEMTABLE_BUDGET_BYTES, false))
}

/// Applied through RocksDB's options string (see `options`); a unit test checks it parses, so
/// the fallback to defaults never happens silently.
const RECOVERY_OPTIONS: &str = "avoid_flush_during_recovery=true";

/// Column families besides the default one, which holds the key/value states and the
/// bookkeeping: the window store, and its time index (see [`crate::hello::windows`]).
const WINDOWS_CF: &str = "windows";
const WINDOW_INDEX_CF: &str = "window-index";

/// The column families to open: the window ones when `windows` (created if missing), and any
/// the store already has (RocksDB opens all or nothing). A store without windows has none: an
/// empty family pins the oldest WAL file, so every WAL the store wrote stayed on disk and
/// RocksDB kept forcing flushes to free them.
fn column_families(path: &Path, windows: bool) -> Vec<ColumnFamilyDescriptor> {
    let mut names: Vec<String> = DB::list_cf(&options(), path).unwrap_or_default();
    if windows {
        names.extend([WINDOWS_CF.to_owned(), WINDOW_INDEX_CF.to_owned()]);
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
        .map(|name| ColumnFamilyDescriptor::new(name, options()))
        .collect()
}

fn options() -> Options {
    // After a crash, open replays the WAL into memtables and by default flushes them to new
    // SSTs before returning, which slows every reopen after kill -9. Keeping them as memtables
    // (the WAL stays until the next flush) makes recovery cheap (BENCHMARKS.md, "Why the code
    // is the way it is"). The rocksdb crate has no setter for this option; the string form is
    // RocksDB's own.
    let mut options = Options::default()
        .get_options_from_string(RECOVERY_OPTIONS)
        .unwrap_or_default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Small memtables: state is tiny per key and RSS matters more than write amplification.
    options.set_write_buffer_size(4 << 20);
    options.set_max_write_buffer_number(2);
    options.set_write_buffer_manager(shared_write_buffers());
    // Values are ~30 bytes of varints and keys short: LZ4 saved little space and cost the
    // stream thread a decompression on every block-cache miss (Kafka Streams' stores are
    // uncompressed too). Most lookups are for keys the memtable does not hold; a whole-key
    // bloom filter answers those without walking the skip list (BENCHMARKS.md, "Why the code
    // is the way it is").
    options.set_compression_type(rocksdb::DBCompressionType::None);
    options.set_memtable_prefix_bloom_ratio(0.1);
    options.set_memtable_whole_key_filtering(true);
    options.set_keep_log_file_num(2);
    options.set_max_open_files(256);
    // Verify SST footers when opening, so truncated files are found at start, not mid-run.
    options.set_paranoid_checks(true);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(shared_block_cache());
    // Point lookups dominate reads: a bloom filter skips SSTs that cannot hold the key.
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    options
}

impl Store {
    /// Opens (creating if missing) the store at `path`, without the window store.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_for(path, false)
    }

    /// Opens (creating if missing) the store at `path`, with the window store when `windows`.
    pub fn open_for(path: &Path, windows: bool) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
        let families = column_families(path, windows);
        let db = DB::open_cf_descriptors(&options(), path, families).map_err(|source| {
            StoreError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
        Self::from_db(db, path)
    }

    /// Opens a store without taking its lock, for operator reads of a stopped (or running)
    /// instance. Never creates anything.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let mut options = options();
        options.create_if_missing(false);
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        // A store written before windows existed has only the default column family.
        let families = DB::list_cf(&options, path).map_err(open_error)?;
        let db = DB::open_cf_for_read_only(&options, path, families, false).map_err(open_error)?;
        Self::from_db(db, path)
    }

    fn from_db(db: DB, path: &Path) -> Result<Store, StoreError> {
        let store = Store {
            db,
            path: path.to_owned(),
            epoch: AtomicU64::new(0),
            cache: None,
        };
        let epoch = store.raw_u64(EPOCH_KEY)?.unwrap_or(0);
        store.epoch.store(epoch, Ordering::Release);
        Ok(store)
    }

    /// Puts a cache of at most `entries` states in front of [`Store::get`]; 0: none.
    pub fn with_read_cache(mut self, entries: usize) -> Store {
        self.cache = (entries > 0).then(|| StateCache::new(entries));
        self
    }

    /// Deletes a store's files. The caller must have dropped every handle to it.
    pub fn wipe(path: &Path) -> Result<(), StoreError> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Wipe {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn raw_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        let value = self.db.get_pinned(key).map_err(|e| self.io(e))?;
        Ok(value.and_then(|v| codec::decode_u64(&v)))
    }

    /// The next changelog offset to restore from; `None` for a store that never committed.
    pub fn checkpoint(&self) -> Result<Option<u64>, StoreError> {
        self.raw_u64(CHECKPOINT_KEY)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The state as stored, without applying the punctuation epoch (what the fold needs).
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<HelloState>, StoreError> {
        let Some(value) = self.db.get_pinned(key).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        codec::decode_state(&value)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                key: String::from_utf8_lossy(key).into_owned(),
                source,
            })
    }

    /// The read cache's lookups and size; `None` without a cache.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(StateCache::stats)
    }

    /// The state as readers see it: counts from before the last punctuation read as zero.
    /// Goes through the read cache; the fold uses [`Store::get_raw`], so processing does not
    /// fill the cache with keys nobody asks for.
    pub fn get(&self, key: &[u8]) -> Result<Option<HelloState>, StoreError> {
        let epoch = self.epoch();
        let raw = match &self.cache {
            None => self.get_raw(key)?,
            Some(cache) => match cache.get(key) {
                Cached::Hit(state) => state,
                Cached::Miss(ticket) => {
                    let state = self.get_raw(key)?;
                    cache.fill(state, ticket);
                    state
                }
            },
        };
        Ok(raw.map(|s| s.effective(epoch)))
    }

    /// Writes the committed changes of one transaction together with the checkpoint.
    pub fn commit<'a>(
        &self,
        changes: impl IntoIterator<Item = Change<'a>>,
        epoch: Option<u64>,
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        self.commit_with(changes, epoch, Some(checkpoint), None)
    }

    /// [`Store::commit`] with the transaction's window changes: states, windows and both
    /// changelogs' checkpoints land in one batch. `checkpoint` is `None` when the transaction
    /// wrote nothing to the state changelog.
    pub fn commit_with<'a>(
        &self,
        changes: impl IntoIterator<Item = Change<'a>>,
        epoch: Option<u64>,
        checkpoint: Option<u64>,
        windows: Option<&WindowCommit<'_>>,
    ) -> Result<(), StoreError> {
        let changes: Vec<Change<'a>> = changes.into_iter().collect();
        let mut batch = WriteBatch::default();
        for change in &changes {
            batch.put(change.key, codec::encode_state(change.state));
        }
        if let Some(epoch) = epoch {
            batch.put(EPOCH_KEY, codec::encode_u64(epoch));
        }
        if let Some(checkpoint) = checkpoint {
            batch.put(CHECKPOINT_KEY, codec::encode_u64(checkpoint));
        }
        if let Some(windows) = windows {
            self.add_windows(&mut batch, windows);
        }
        self.write(batch)?;
        // Only after the write: a fill that read the store before it must see the bump.
        if let Some(cache) = &self.cache {
            for change in &changes {
                cache.committed(change.key, change.state);
            }
        }
        if let Some(epoch) = epoch {
            self.epoch.store(epoch, Ordering::Release);
        }
        Ok(())
    }

    /// Writes changelog records verbatim (restore); `next_offset` becomes the checkpoint.
    pub fn apply_changelog<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        next_offset: u64,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let mut epoch = None;
        for (key, value) in records {
            if key == EPOCH_KEY {
                epoch = codec::decode_u64(value);
            }
            batch.put(key, value);
        }
        batch.put(CHECKPOINT_KEY, codec::encode_u64(next_offset));
        self.write(batch)?;
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        if let Some(epoch) = epoch {
            self.epoch.store(epoch, Ordering::Release);
        }
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        // The WAL stays on (unsynced): a killed process keeps everything it committed, so a
        // restart replays nothing; a machine crash loses at most an unsynced tail, which the
        // checkpoint in the same batch makes the restore replay.
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.db.write_opt(batch, &options).map_err(|e| self.io(e))
    }

    /// Flushes memtables so a clean restart opens fast.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.io(e))
    }

    /// Whether any key has state (a checkpoint alone may only cover aborted records and
    /// transaction markers).
    pub fn has_states(&self) -> Result<bool, StoreError> {
        for item in self.db.iterator(IteratorMode::Start) {
            let (key, _) = item.map_err(|e| self.io(e))?;
            if codec::is_entity_key(&key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every entity's effective state, in key order.
    pub fn for_each_state(
        &self,
        mut visit: impl FnMut(&str, HelloState),
    ) -> Result<u64, StoreError> {
        let epoch = self.epoch();
        let mut visited = 0;
        for item in self.db.iterator(IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.io(e))?;
            if !codec::is_entity_key(&key) {
                continue;
            }
            let state = codec::decode_state(&value).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                key: String::from_utf8_lossy(&key).into_owned(),
                source,
            })?;
            visit(&String::from_utf8_lossy(&key), state.effective(epoch));
            visited += 1;
        }
        Ok(visited)
    }
}

/// `<state_dir>/<app_id>/<partition>/`, as docs/DESIGN.md lays it out.
pub fn partition_dir(state_dir: &Path, application_id: &str, partition: i32) -> PathBuf {
    state_dir.join(application_id).join(partition.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hello::domain::Mood;

    #[test]
    fn only_corruption_is_a_reason_to_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let locked = Store::open(dir.path()).err().unwrap();
        assert_eq!(
            locked.open_failure(),
            Some(OpenFailure::Locked),
            "{locked:?}"
        );
        drop(store);
        std::fs::write(
            dir.path().join("CURRENT"),
            b"MANIFEST-9-garbage\n\x00garbled",
        )
        .unwrap();
        let corrupt = Store::open(dir.path()).err().unwrap();
        assert_eq!(
            corrupt.open_failure(),
            Some(OpenFailure::Corrupt),
            "{corrupt:?}"
        );

        let other = tempfile::tempdir().unwrap();
        Store::open(other.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = |mode| {
            std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        // Root ignores permission bits; only check where they apply.
        dir_mode(0o500);
        if std::fs::File::create(other.path().join("probe")).is_err() {
            let refused = Store::open(other.path()).err().unwrap();
            assert_eq!(
                refused.open_failure(),
                Some(OpenFailure::Resource),
                "{refused:?}"
            );
        }
        dir_mode(0o700);
    }

    #[test]
    fn recovery_options_string_parses() {
        assert!(Options::default()
            .get_options_from_string(RECOVERY_OPTIONS)
            .is_ok());
    }

    fn state(count: u64) -> HelloState {
        HelloState {
            hello_count: count,
            hello_total_count: count,
            mood: Mood::Happy,
            revision: count,
            last_offset: count as i64,
            updated_at_ms: 0,
            reset_epoch: 0,
        }
    }

    #[test]
    fn commit_writes_state_and_checkpoint_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint().unwrap(), None);
        let s = state(3);
        store
            .commit(
                [Change {
                    key: b"alice",
                    state: &s,
                }],
                None,
                42,
            )
            .unwrap();
        assert_eq!(store.get(b"alice").unwrap(), Some(s));
        assert_eq!(store.checkpoint().unwrap(), Some(42));
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.get(b"alice").unwrap(), Some(s));
        assert_eq!(reopened.checkpoint().unwrap(), Some(42));
    }

    #[test]
    fn an_epoch_zeroes_counts_on_read_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = state(5);
        store
            .commit(
                [Change {
                    key: b"bob",
                    state: &s,
                }],
                None,
                1,
            )
            .unwrap();
        store.commit([], Some(1), 2).unwrap();
        assert_eq!(store.get(b"bob").unwrap().unwrap().hello_count, 0);
        assert_eq!(store.get_raw(b"bob").unwrap().unwrap().hello_count, 5);
        drop(store);
        let reopened = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(reopened.epoch(), 1);
        let mut seen = Vec::new();
        reopened
            .for_each_state(|k, s| seen.push((k.to_owned(), s.hello_count)))
            .unwrap();
        assert_eq!(seen, [("bob".to_owned(), 0)]);
    }

    #[test]
    fn cached_reads_follow_commits_restores_and_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().with_read_cache(16);
        let commit = |count, checkpoint| {
            let s = state(count);
            let change = Change {
                key: b"erin",
                state: &s,
            };
            store.commit([change], None, checkpoint).unwrap();
        };
        assert_eq!(store.get(b"erin").unwrap(), None);
        commit(1, 1);
        assert_eq!(store.get(b"erin").unwrap(), Some(state(1)));
        commit(2, 2);
        assert_eq!(store.get(b"erin").unwrap(), Some(state(2)));
        store.commit([], Some(1), 3).unwrap();
        assert_eq!(store.get(b"erin").unwrap().unwrap().hello_count, 0);
        let restored = codec::encode_state(&state(7));
        store
            .apply_changelog([(&b"erin"[..], &restored[..])], 4)
            .unwrap();
        assert_eq!(store.get_raw(b"erin").unwrap(), Some(state(7)));
        assert_eq!(store.get(b"erin").unwrap().unwrap().revision, 7);
    }

    #[test]
    fn restore_copies_changelog_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = codec::encode_state(&state(7));
        let epoch = codec::encode_u64(2);
        store
            .apply_changelog([(&b"carol"[..], &s[..]), (EPOCH_KEY, &epoch[..])], 10)
            .unwrap();
        assert_eq!(store.get_raw(b"carol").unwrap(), Some(state(7)));
        assert_eq!(store.epoch(), 2);
        assert_eq!(store.checkpoint().unwrap(), Some(10));
    }
}
