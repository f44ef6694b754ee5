//! The RocksDB state store of one partition, holding committed state only.
//!
//! A partition's stores (the application's [`StoreSpec`]s) are column families of one RocksDB.
//! The task keeps the writes of an open transaction in its overlay and hands them to
//! [`Store::commit`] after Kafka accepted the transaction; the values and each changelog's
//! offset they reflect (the checkpoints) land in one `WriteBatch`, so every store is always a
//! prefix of its changelog and a restore replays only what lies past the checkpoint.
//!
//! The store knows keys and values as bytes; what they mean is the application's.

pub mod cache;
pub mod restore;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteBufferManager, WriteOptions, DB,
};

use super::application::{StoreId, StoreSpec};
pub use cache::CacheStats;
use cache::{Cached, StateCache};

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
    #[error("state store at {path} holds a corrupt value in {family} for key {key:?}: {reason}")]
    Corrupt {
        path: PathBuf,
        family: &'static str,
        key: String,
        reason: String,
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

/// The engine's own keys in the default family begin with this byte.
const BOOKKEEPING: u8 = 0xff;

/// One store's column families and checkpoint key.
#[derive(Debug, Clone)]
struct Family {
    name: &'static str,
    /// The default family (the first store).
    default: bool,
    index: Option<crate::engine::application::IndexSpec>,
    checkpoint_key: Vec<u8>,
    cached: bool,
    changelog: String,
    folded_offset: Option<fn(&[u8], &[u8]) -> Option<i64>>,
}

impl Family {
    fn of(id: usize, spec: &StoreSpec) -> Family {
        // The first store's key predates the others and stays, so existing stores open.
        let name = match id {
            0 => "changelog-checkpoint".to_owned(),
            _ => format!("{}-changelog-checkpoint", spec.family),
        };
        let mut checkpoint_key = vec![BOOKKEEPING];
        checkpoint_key.extend_from_slice(name.as_bytes());
        Family {
            name: spec.family,
            default: id == 0,
            index: spec.index,
            checkpoint_key,
            cached: id == 0 && spec.read_cache,
            changelog: spec.changelog.clone(),
            folded_offset: spec.folded_offset,
        }
    }
}

/// One write of a commit: `value: None` deletes the key.
pub struct Write<'a> {
    pub store: StoreId,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

pub struct Store {
    db: DB,
    path: PathBuf,
    families: Vec<Family>,
    /// Committed values of the first store that queries read, kept fresh by commits; `None`:
    /// every read goes to RocksDB.
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

/// The column families to open: the stores' (created if missing), and any the store already
/// has (RocksDB opens all or nothing). Only declared families are created: an empty family
/// pins the oldest WAL file, so every WAL the store wrote stayed on disk and RocksDB kept
/// forcing flushes to free them.
fn column_families(path: &Path, families: &[Family]) -> Vec<ColumnFamilyDescriptor> {
    let mut names: Vec<String> = DB::list_cf(&options(), path).unwrap_or_default();
    for family in families.iter().filter(|f| !f.default) {
        names.push(family.name.to_owned());
    }
    names.extend(
        families
            .iter()
            .filter_map(|f| Some(f.index?.family.to_owned())),
    );
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
    /// Opens (creating if missing) the partition store at `path` with the application's
    /// stores.
    pub fn open(path: &Path, stores: &[StoreSpec]) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
        let families = families(stores);
        let descriptors = column_families(path, &families);
        let db = DB::open_cf_descriptors(&options(), path, descriptors).map_err(|source| {
            StoreError::Open {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(Self::from_db(db, path, families))
    }

    /// Opens a store without taking its lock, for operator reads of a stopped (or running)
    /// instance. Never creates anything; a store missing a family reads as empty there.
    pub fn open_read_only(path: &Path, stores: &[StoreSpec]) -> Result<Store, StoreError> {
        let mut options = options();
        options.create_if_missing(false);
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let existing = DB::list_cf(&options, path).map_err(open_error)?;
        let db = DB::open_cf_for_read_only(&options, path, existing, false).map_err(open_error)?;
        Ok(Self::from_db(db, path, families(stores)))
    }

    fn from_db(db: DB, path: &Path, families: Vec<Family>) -> Store {
        Store {
            db,
            path: path.to_owned(),
            families,
            cache: None,
        }
    }

    /// Puts a cache of at most `entries` values in front of [`Store::get_cached`]; 0: none.
    pub fn with_read_cache(mut self, entries: usize) -> Store {
        let wanted = self.families.first().is_some_and(|f| f.cached);
        self.cache = (wanted && entries > 0).then(|| StateCache::new(entries));
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

    /// How many stores the application declared.
    pub fn stores(&self) -> usize {
        self.families.len()
    }

    /// The store's name (its column family).
    pub fn name(&self, store: StoreId) -> &'static str {
        self.families[store.0].name
    }

    /// The store's changelog topic.
    pub fn changelog(&self, store: StoreId) -> &str {
        &self.families[store.0].changelog
    }

    /// The input offset whose fold wrote this changelog value, if the application records one
    /// ([`StoreSpec::folded_offset`]).
    pub fn folded_offset(&self, store: StoreId, key: &[u8], value: &[u8]) -> Option<i64> {
        self.families[store.0].folded_offset?(key, value)
    }

    /// Where `key` of `store` appears in the store's index; `None`: nowhere.
    pub fn index_key(&self, store: StoreId, key: &[u8]) -> Option<Vec<u8>> {
        (self.families[store.0].index?.key)(key)
    }

    fn io(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The error for a value the application cannot decode.
    pub fn corrupt(&self, store: StoreId, key: &[u8], reason: impl Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            family: self.name(store),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        }
    }

    /// `None` for a family this store does not have (opened read-only before it existed).
    fn handle(&self, name: &str) -> Option<&ColumnFamily> {
        self.db.cf_handle(name)
    }

    /// The store's column family: `Some(None)` for the default one, `None` when this store
    /// lacks it.
    fn family_handle(&self, store: StoreId) -> Option<Option<&ColumnFamily>> {
        let family = &self.families[store.0];
        if family.default {
            return Some(None);
        }
        self.handle(family.name).map(Some)
    }

    fn get_pinned(
        &self,
        store: StoreId,
        key: &[u8],
    ) -> Result<Option<rocksdb::DBPinnableSlice<'_>>, StoreError> {
        let found = match self.family_handle(store) {
            None => return Ok(None),
            Some(None) => self.db.get_pinned(key),
            Some(Some(handle)) => self.db.get_pinned_cf(handle, key),
        };
        found.map_err(|e| self.io(e))
    }

    /// The committed value of `key`, decoded by `read`; an `Err` of `read` is a corrupt value.
    pub fn get<T, E: Display>(
        &self,
        store: StoreId,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Option<T>, StoreError> {
        match self.get_pinned(store, key)? {
            None => Ok(None),
            Some(value) => read(&value)
                .map(Some)
                .map_err(|e| self.corrupt(store, key, e)),
        }
    }

    /// [`Store::get`] on the first store, through the read cache when there is one. For
    /// queries: processing reads with [`Store::get`], so it does not fill the cache with keys
    /// nobody asks for.
    pub fn get_cached<T, E: Display>(
        &self,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Option<T>, StoreError> {
        let first = StoreId(0);
        let Some(cache) = &self.cache else {
            return self.get(first, key, read);
        };
        let decode = |value: Option<&[u8]>| match value {
            None => Ok(None),
            Some(value) => read(value)
                .map(Some)
                .map_err(|e| self.corrupt(first, key, e)),
        };
        match cache.get(key) {
            Cached::Hit(value) => decode(value.as_ref().map(|v| v.as_bytes())),
            Cached::Miss(ticket) => {
                let value = self.get_pinned(first, key)?;
                cache.fill(value.as_deref(), ticket);
                decode(value.as_deref())
            }
        }
    }

    /// The read cache's lookups and size; `None` without a cache.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache.as_ref().map(StateCache::stats)
    }

    /// The next offset of the store's changelog to restore from; `None` for a store that never
    /// committed.
    pub fn checkpoint(&self, store: StoreId) -> Result<Option<u64>, StoreError> {
        let key = &self.families[store.0].checkpoint_key;
        let value = self.db.get_pinned(key).map_err(|e| self.io(e))?;
        Ok(value.and_then(|v| decode_u64(&v)))
    }

    fn put(&self, batch: &mut WriteBatch, store: StoreId, key: &[u8], value: Option<&[u8]>) {
        let Some(data) = self.family_handle(store) else {
            return;
        };
        match (data, value) {
            (None, Some(value)) => batch.put(key, value),
            (None, None) => batch.delete(key),
            (Some(data), Some(value)) => batch.put_cf(data, key, value),
            (Some(data), None) => batch.delete_cf(data, key),
        }
        let Some(index) = self.families[store.0].index else {
            return;
        };
        let (Some(handle), Some(index_key)) = (self.handle(index.family), (index.key)(key)) else {
            return;
        };
        match value {
            Some(value) => batch.put_cf(handle, index_key, value),
            None => batch.delete_cf(handle, index_key),
        }
    }

    /// Writes the committed writes of one transaction together with the checkpoints:
    /// `checkpoints[i]` is store i's changelog offset after the transaction's last record
    /// there (`None`: the transaction wrote nothing to it).
    pub fn commit<'a>(
        &self,
        writes: impl IntoIterator<Item = Write<'a>>,
        checkpoints: &[Option<u64>],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let mut cached: Vec<(&'a [u8], Option<&'a [u8]>)> = Vec::new();
        for write in writes {
            self.put(&mut batch, write.store, write.key, write.value);
            if self.cache.is_some() && write.store.0 == 0 {
                cached.push((write.key, write.value));
            }
        }
        for (family, checkpoint) in self.families.iter().zip(checkpoints) {
            if let Some(checkpoint) = checkpoint {
                batch.put(&family.checkpoint_key, checkpoint.to_be_bytes());
            }
        }
        self.write(batch)?;
        // Only after the write: a fill that read the store before it must see the bump.
        if let Some(cache) = &self.cache {
            for (key, value) in cached {
                cache.committed(key, value);
            }
        }
        Ok(())
    }

    /// Writes changelog records verbatim (restore): a value is put, a tombstone deletes;
    /// `next_offset` becomes the store's checkpoint.
    pub fn apply_changelog<'a>(
        &self,
        store: StoreId,
        records: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        next_offset: u64,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (key, value) in records {
            if store.0 == 0 && key.first() == Some(&BOOKKEEPING) {
                continue;
            }
            self.put(&mut batch, store, key, value);
        }
        batch.put(
            &self.families[store.0].checkpoint_key,
            next_offset.to_be_bytes(),
        );
        self.write(batch)?;
        if let (Some(cache), 0) = (&self.cache, store.0) {
            cache.clear();
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

    /// Whether the first store holds any key (a checkpoint alone may only cover aborted
    /// records and transaction markers).
    pub fn has_data(&self) -> Result<bool, StoreError> {
        let mut found = false;
        self.scan(StoreId(0), &[], None, |_, _| {
            found = true;
            Ok(false)
        })?;
        Ok(found)
    }

    /// The committed keys of `store` from `from` up to (not including) `below`, in key order;
    /// `visit` returns false to stop. The engine's own keys are never visited.
    pub fn scan(
        &self,
        store: StoreId,
        from: &[u8],
        below: Option<&[u8]>,
        visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        match self.family_handle(store) {
            Some(handle) => self.scan_family(handle, from, below, visit),
            None => Ok(()),
        }
    }

    /// [`Store::scan`] over the store's index: `visit` gets index keys and values.
    pub fn scan_index(
        &self,
        store: StoreId,
        from: &[u8],
        below: Option<&[u8]>,
        visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let Some(index) = self.families[store.0].index else {
            return Ok(());
        };
        let Some(handle) = self.handle(index.family) else {
            return Ok(());
        };
        self.scan_family(Some(handle), from, below, visit)
    }

    fn scan_family(
        &self,
        handle: Option<&ColumnFamily>,
        from: &[u8],
        below: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if below.is_some_and(|below| below <= from) {
            return Ok(());
        }
        let mut options = ReadOptions::default();
        if let Some(below) = below {
            options.set_iterate_upper_bound(below.to_vec());
        }
        let mode = IteratorMode::From(from, Direction::Forward);
        let iterator = match handle {
            Some(handle) => self.db.iterator_cf_opt(handle, options, mode),
            None => self.db.iterator_opt(mode, options),
        };
        for item in iterator {
            let (key, value) = item.map_err(|e| self.io(e))?;
            if handle.is_none() && key.first() == Some(&BOOKKEEPING) {
                // The engine's keys sort last in the default family.
                break;
            }
            if !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }
}

fn families(stores: &[StoreSpec]) -> Vec<Family> {
    stores
        .iter()
        .enumerate()
        .map(|(id, spec)| Family::of(id, spec))
        .collect()
}

/// A checkpoint; `None` for anything that is not 8 bytes.
fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let word: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(word))
}

/// `<state_dir>/<app_id>/<partition>/`, as docs/DESIGN.md lays it out.
pub fn partition_dir(state_dir: &Path, application_id: &str, partition: i32) -> PathBuf {
    state_dir.join(application_id).join(partition.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::application::IndexSpec;
    use crate::kafka::admin::Cleanup;

    const MAIN: StoreId = StoreId(0);
    const TIMED: StoreId = StoreId(1);

    /// The index of the second store: the key reversed.
    fn reversed(key: &[u8]) -> Option<Vec<u8>> {
        (!key.is_empty()).then(|| key.iter().rev().copied().collect())
    }

    fn specs() -> Vec<StoreSpec> {
        let spec = |family, index| StoreSpec {
            family,
            changelog: format!("{family}-changelog"),
            cleanup: Cleanup::Compact,
            index,
            folded_offset: None,
            read_cache: true,
        };
        vec![
            spec("default", None),
            spec(
                "timed",
                Some(IndexSpec {
                    family: "timed-index",
                    key: reversed,
                }),
            ),
        ]
    }

    fn text(bytes: &[u8]) -> Result<String, std::str::Utf8Error> {
        std::str::from_utf8(bytes).map(str::to_owned)
    }

    fn put<'a>(store: StoreId, key: &'a [u8], value: &'a [u8]) -> Write<'a> {
        Write {
            store,
            key,
            value: Some(value),
        }
    }

    fn scanned(store: &Store, id: StoreId, index: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut seen = Vec::new();
        let visit = |k: &[u8], v: &[u8]| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(true)
        };
        match index {
            false => store.scan(id, &[], None, visit).unwrap(),
            true => store.scan_index(id, &[], None, visit).unwrap(),
        }
        seen
    }

    #[test]
    fn only_corruption_is_a_reason_to_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &specs()).unwrap();
        let locked = Store::open(dir.path(), &specs()).err().unwrap();
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
        let corrupt = Store::open(dir.path(), &specs()).err().unwrap();
        assert_eq!(
            corrupt.open_failure(),
            Some(OpenFailure::Corrupt),
            "{corrupt:?}"
        );

        let other = tempfile::tempdir().unwrap();
        Store::open(other.path(), &specs()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = |mode| {
            std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        // Root ignores permission bits; only check where they apply.
        dir_mode(0o500);
        if std::fs::File::create(other.path().join("probe")).is_err() {
            let refused = Store::open(other.path(), &specs()).err().unwrap();
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

    #[test]
    fn a_commit_writes_every_store_its_index_and_checkpoints_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &specs()).unwrap();
        assert_eq!(store.checkpoint(MAIN).unwrap(), None);
        store
            .commit(
                [
                    put(MAIN, b"alice", b"3"),
                    put(TIMED, b"ab", b"x"),
                    put(TIMED, b"ba", b"y"),
                ],
                &[Some(42), None],
            )
            .unwrap();
        assert_eq!(store.get(MAIN, b"alice", text).unwrap(), Some("3".into()));
        assert_eq!(store.get(TIMED, b"alice", text).unwrap(), None);
        assert_eq!(store.checkpoint(MAIN).unwrap(), Some(42));
        assert_eq!(store.checkpoint(TIMED).unwrap(), None);
        assert_eq!(
            scanned(&store, TIMED, true),
            [
                (b"ab".to_vec(), b"y".to_vec()),
                (b"ba".to_vec(), b"x".to_vec())
            ]
        );
        let delete = Write {
            store: TIMED,
            key: b"ab",
            value: None,
        };
        store.commit([delete], &[None, Some(7)]).unwrap();
        assert_eq!(
            scanned(&store, TIMED, false),
            [(b"ba".to_vec(), b"y".to_vec())]
        );
        assert_eq!(
            scanned(&store, TIMED, true),
            [(b"ab".to_vec(), b"y".to_vec())]
        );
        drop(store);
        let reopened = Store::open_read_only(dir.path(), &specs()).unwrap();
        assert_eq!(reopened.checkpoint(MAIN).unwrap(), Some(42));
        assert_eq!(reopened.checkpoint(TIMED).unwrap(), Some(7));
        // The checkpoints are the engine's: a scan of the first store never shows them.
        assert_eq!(
            scanned(&reopened, MAIN, false),
            [(b"alice".to_vec(), b"3".to_vec())]
        );
        assert!(reopened.has_data().unwrap());
    }

    #[test]
    fn a_value_the_application_cannot_read_is_a_corrupt_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &specs()).unwrap();
        store
            .commit([put(MAIN, b"bob", b"\xff\xfe")], &[Some(1)])
            .unwrap();
        let error = store.get(MAIN, b"bob", text).unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { family: "default", key, .. } if key == "bob"),
            "{error:?}"
        );
    }

    #[test]
    fn a_restore_puts_values_deletes_tombstones_and_keeps_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &specs()).unwrap();
        store
            .apply_changelog(
                TIMED,
                [(&b"cd"[..], Some(&b"1"[..])), (b"ef", Some(b"2"))],
                2,
            )
            .unwrap();
        store
            .apply_changelog(TIMED, [(&b"cd"[..], None)], 3)
            .unwrap();
        assert_eq!(
            scanned(&store, TIMED, false),
            [(b"ef".to_vec(), b"2".to_vec())]
        );
        assert_eq!(
            scanned(&store, TIMED, true),
            [(b"fe".to_vec(), b"2".to_vec())]
        );
        assert_eq!(store.checkpoint(TIMED).unwrap(), Some(3));
        assert_eq!(store.checkpoint(MAIN).unwrap(), None);
        assert!(!store.has_data().unwrap());
    }

    #[test]
    fn cached_reads_follow_commits_deletes_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &specs())
            .unwrap()
            .with_read_cache(16);
        let read = |key: &[u8]| store.get_cached(key, text).unwrap();
        assert_eq!(read(b"erin"), None);
        store
            .commit([put(MAIN, b"erin", b"1")], &[Some(1)])
            .unwrap();
        assert_eq!(read(b"erin"), Some("1".into()));
        store
            .commit([put(MAIN, b"erin", b"2")], &[Some(2)])
            .unwrap();
        assert_eq!(read(b"erin"), Some("2".into()));
        let delete = Write {
            store: MAIN,
            key: b"erin",
            value: None,
        };
        store.commit([delete], &[Some(3)]).unwrap();
        assert_eq!(read(b"erin"), None);
        store
            .apply_changelog(MAIN, [(&b"erin"[..], Some(&b"7"[..]))], 4)
            .unwrap();
        assert_eq!(read(b"erin"), Some("7".into()));
        assert!(store.cache_stats().unwrap().hits > 0);
    }
}
