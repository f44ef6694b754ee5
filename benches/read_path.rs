//! `read_path`: how long one read of a key's state takes, from the store to the wire.
//!
//! Data: 100,000 keys `k:000000000000`..`k:000000099999` (the keys `redis-benchmark -r 100000`
//! makes of `k:__rand_int__`) spread over six partition stores exactly as the daemon spreads
//! them (the Java client's murmur2 partitioner), committed with `Store::commit`. The same data
//! is loaded three times: into stores without a read cache, into stores opened with
//! `Store::with_read_cache` sized as the daemon sizes it (`query.cache_max_entries`, 100,000 by
//! default or `CACHE_ENTRIES`, split evenly over the partitions), and into stores whose cache
//! holds every key of its partition (`KEYS` entries each). Every key is read once through each
//! `LocalState` before anything is timed (a correctness check that also warms the caches).
//!
//! Query path, in process (1,000,000 random reads per round):
//! - `Store::get` on the owning store: without the cache RocksDB `get_pinned` + decode + epoch;
//!   with it one `StateCache` probe (a shard mutex and a `HashMap` lookup) when the key hits;
//! - `LocalState::lookup`, what both query servers call (key validation, murmur2, the partition
//!   map behind its `RwLock`, then `Store::get`);
//!
//! each for the three kinds of store, while the data sits in the memtable (as right after
//! commits), and for the uncached and daemon-sized stores again after a flush (SST blocks
//! through the block cache: what a miss of the read cache costs then). Whether the daemon-sized
//! cache holds all 100,000 keys depends on how `StateCache` bounds its shards; the share of
//! reads that hit once warm is printed and recorded (replayed on `StateCache`s of the same
//! size, since the stores' own caches are private).
//!
//! Query path, over loopback (100,000 random reads per round, one request at a time with the
//! `redis` crate's synchronous connection):
//! - `GET` against hello-streams' RESP server (`query::resp::serve`, in this process, on a
//!   two-worker tokio runtime like the daemon's), once over the uncached stores and once over
//!   the daemon-sized cached ones;
//! - `GET` against a real `redis-server` holding the same keys (started here on a free loopback
//!   port with no persistence, stopped by pid; skipped when `redis-server` is not installed).
//!
//! Breakdown and what-ifs (memtable phase), to see where a lookup's time goes: `validate_key`,
//! `partition_for_key`, one SipHash of a key (`StateCache` hashes a key twice: to pick the
//! shard, then in the shard's `HashMap`), a `StateCache::get` hit on its own, a hit of
//! `InlineCache` (a what-if for `StateCache`: keys stored in the entry, one cheap hash);
//! replicas of `LocalState::lookup`'s routing over the stores whose cache holds every key,
//! reading the store under the partition map's read guard instead of cloning its `Arc`, and
//! from a fixed table without a lock; raw RocksDB `get_pinned` with the store's options, the
//! same with one reused `ReadOptions`, the same with a hash memtable. Then two threads reading
//! at once (aggregate reads/s), which shows contention on shared atomics (the `RwLock` of the
//! partition map, the `Arc<Store>` count, the cache's shard mutexes).
//!
//! Each read is timed on its own with `Instant` (the timer's own cost is printed) to get
//! p50/p99; the mean comes from a second, untimed pass. The keys are read from one flat array
//! in read order, so they are in cache as a request's key is. Every row runs `ROUNDS` times,
//! interleaved with the other rows of its phase, and reports the median of each statistic.
//! Results: tables on stdout and `bench/results/read-path-inprocess.json`. The in-process target (p50 <=
//! 1 µs) is checked on the `LocalState::lookup` rows of the daemon-sized cache.
//!
//! Run: `cargo bench --bench read_path` (about 3 minutes). Environment: `READS` (1000000),
//! `NET_READS` (100000), `ROUNDS` (3), `CACHE_ENTRIES` (the configured
//! `query.cache_max_entries`); `READ_PATH_NET=0` keeps to the in-process rows (e.g. under
//! `perf record`). `READ_PATH_SERVE=<seconds>` serves the loaded stores over RESP instead of
//! measuring (see `serve_mode`), for redis-benchmark runs that need no Kafka.

use std::hint::black_box;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hello_streams::config::{self, Config, Sources};
use hello_streams::domain::{validate_key, HelloState, Mood};
use hello_streams::ownership::OwnerTable;
use hello_streams::partitioner::partition_for_key;
use hello_streams::query::local::LocalState;
use hello_streams::query::resp::{self, RespLimits, RespServer};
use hello_streams::query::{Lookup, StateQuery, Status};
use hello_streams::shutdown;
use hello_streams::store::cache::{Cached, StateCache};
use hello_streams::store::{codec, Change, Store};
use hello_streams::telemetry::Metrics;

const KEYS: usize = 100_000;
const PARTITIONS: i32 = 6;
const COMMIT_BATCH: usize = 5_000;
const THREADS: usize = 2;
/// What-if rows: `LocalState::lookup`'s routing without the `Arc<Store>` clone, and without
/// any lock (see `main`).
const UNDER_GUARD: &str = "lookup replica: store read under the map's read guard, no Arc clone";
const NO_LOCK: &str = "lookup replica: fixed store table, no lock";
/// What-if row: `StateCache`'s probe with inline keys and a cheap hash (`InlineCache`).
const INLINE: &str = "cache probe with keys inline + Fx-style hash (hit)";

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes of every key: "k:" and 12 digits.
const KEY_LEN: usize = 14;

/// The key redis-benchmark's `-r 100000` builds from `k:__rand_int__`.
fn key(i: usize) -> String {
    format!("k:{i:012}")
}

/// xorshift64*: reproducible random key indexes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn index(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn state(i: usize) -> HelloState {
    HelloState {
        hello_count: 1 + (i as u64 % 7),
        hello_total_count: 1 + (i as u64 % 7),
        mood: Mood::Happy,
        revision: 1 + (i as u64 % 7),
        last_offset: i as i64,
        updated_at_ms: 1_700_000_000_000 + i as i64,
        reset_epoch: 0,
    }
}

#[derive(Debug, Clone)]
struct Row {
    group: &'static str,
    name: String,
    reads: usize,
    /// Interleaved repetitions; every statistic is the median over them.
    rounds: usize,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    /// Mean of the individually timed reads (includes one `Instant::now()` pair each).
    mean_timed_ns: f64,
    /// Mean from one untimed pass: total time / reads.
    mean_batch_ns: f64,
}

impl Row {
    fn ops_per_sec(&self) -> f64 {
        1e9 / self.mean_batch_ns
    }

    fn json(&self) -> String {
        format!(
            "{{\"group\":\"{}\",\"name\":\"{}\",\"reads\":{},\"rounds\":{},\"p50_ns\":{},\"p90_ns\":{},\
             \"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"mean_timed_ns\":{:.1},\
             \"mean_batch_ns\":{:.1},\"ops_per_sec_one_thread\":{:.0}}}",
            self.group,
            self.name,
            self.reads,
            self.rounds,
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.mean_timed_ns,
            self.mean_batch_ns,
            self.ops_per_sec()
        )
    }
}

/// Several threads reading at once: only throughput (no per-read timing).
#[derive(Debug, Clone)]
struct ParRow {
    name: String,
    threads: usize,
    reads: usize,
    reads_per_sec: f64,
    single_thread_reads_per_sec: f64,
}

impl ParRow {
    fn json(&self) -> String {
        format!(
            "{{\"name\":\"{}\",\"threads\":{},\"reads\":{},\"reads_per_sec\":{:.0},\
             \"single_thread_reads_per_sec\":{:.0},\"scaling\":{:.2}}}",
            self.name,
            self.threads,
            self.reads,
            self.reads_per_sec,
            self.single_thread_reads_per_sec,
            self.reads_per_sec / self.single_thread_reads_per_sec
        )
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Times `read(0..n)` twice: each call on its own (percentiles), then as one pass (mean).
/// `read` gets the position in the read sequence, whose key bytes lie in one flat array read
/// front to back, so the key is in cache as it is in a server's input buffer.
fn measure(group: &'static str, name: &str, n: usize, read: &mut dyn FnMut(usize)) -> Row {
    // Warm-up: caches, branch predictors, lazily allocated buffers.
    for i in 0..n / 10 {
        read(i);
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        read(i);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    let start = Instant::now();
    for i in 0..n {
        read(i);
    }
    let batch = start.elapsed();
    let mean_timed_ns = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
    samples.sort_unstable();
    Row {
        group,
        name: name.to_owned(),
        reads: n,
        rounds: 1,
        p50_ns: percentile(&samples, 0.50),
        p90_ns: percentile(&samples, 0.90),
        p99_ns: percentile(&samples, 0.99),
        p999_ns: percentile(&samples, 0.999),
        max_ns: *samples.last().unwrap(),
        mean_timed_ns,
        mean_batch_ns: batch.as_nanos() as f64 / n as f64,
    }
}

/// One thing to measure.
struct Case<'a> {
    group: &'static str,
    name: String,
    read: Box<dyn FnMut(usize) + 'a>,
}

fn case<'a>(group: &'static str, name: &str, read: impl FnMut(usize) + 'a) -> Case<'a> {
    Case {
        group,
        name: name.to_owned(),
        read: Box::new(read),
    }
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs every case `rounds` times, interleaved (a, b, c, a, b, c, ...) so drift and noise from
/// other processes spread over all of them; each statistic is the median over the rounds.
fn run_cases(cases: &mut [Case<'_>], n: usize, rounds: usize) -> Vec<Row> {
    let mut all: Vec<Vec<Row>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (c, results) in cases.iter_mut().zip(&mut all) {
            let row = measure(c.group, &c.name, n, &mut *c.read);
            eprintln!(
                "  [{}/{rounds}] {:<50} p50 {:>7} ns  p99 {:>7} ns  mean {:>8.1} ns",
                round + 1,
                row.name,
                row.p50_ns,
                row.p99_ns,
                row.mean_batch_ns
            );
            results.push(row);
        }
    }
    all.into_iter()
        .map(|rs| {
            let pick_u = |f: fn(&Row) -> u64| median_u64(rs.iter().map(f).collect());
            let pick_f = |f: fn(&Row) -> f64| median_f64(rs.iter().map(f).collect());
            Row {
                group: rs[0].group,
                name: rs[0].name.clone(),
                reads: rs[0].reads,
                rounds: rs.len(),
                p50_ns: pick_u(|r| r.p50_ns),
                p90_ns: pick_u(|r| r.p90_ns),
                p99_ns: pick_u(|r| r.p99_ns),
                p999_ns: pick_u(|r| r.p999_ns),
                max_ns: pick_u(|r| r.max_ns),
                mean_timed_ns: pick_f(|r| r.mean_timed_ns),
                mean_batch_ns: pick_f(|r| r.mean_batch_ns),
            }
        })
        .collect()
}

/// `threads` threads each run `read` over all `n` positions (starting at different offsets)
/// at once; the aggregate reads/s against the single-thread mean.
fn measure_parallel(
    name: &str,
    threads: usize,
    n: usize,
    single: &Row,
    read: &(dyn Fn(usize) + Sync),
) -> ParRow {
    let barrier = Barrier::new(threads);
    let elapsed: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let offset = t * n / threads;
                    let mine = || (offset..n).chain(0..offset);
                    for i in mine().take(n / 10) {
                        read(i);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    for i in mine() {
                        read(i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let slowest = elapsed.iter().max().unwrap().as_secs_f64();
    let row = ParRow {
        name: name.to_owned(),
        threads,
        reads: n * threads,
        reads_per_sec: (n * threads) as f64 / slowest,
        single_thread_reads_per_sec: single.ops_per_sec(),
    };
    eprintln!(
        "  {:<50} {} threads: {:>10.0} reads/s ({:.2}x one thread)",
        row.name,
        threads,
        row.reads_per_sec,
        row.reads_per_sec / row.single_thread_reads_per_sec
    );
    row
}

/// The cost of the timer itself: an empty read timed like the others.
fn timer_overhead_ns(n: usize) -> u64 {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        black_box(i);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    percentile(&samples, 0.5)
}

/// The options `Store::open` uses (src/store/mod.rs), for the raw RocksDB what-ifs; the block
/// cache is this bench's own (the store's shared one is private), of the same size.
fn store_options() -> rocksdb::Options {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.set_write_buffer_size(4 << 20);
    options.set_max_write_buffer_number(2);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_keep_log_file_num(2);
    options.set_max_open_files(256);
    options.set_paranoid_checks(true);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(32 << 20));
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    options
}

/// The store's options with a hash-bucketed memtable keyed on the whole key: a point lookup
/// hashes to its bucket instead of walking a skip list over the whole memtable.
fn hash_memtable_options() -> rocksdb::Options {
    let mut options = store_options();
    options.set_prefix_extractor(rocksdb::SliceTransform::create_noop());
    options.set_memtable_factory(rocksdb::MemtableFactory::HashSkipList {
        bucket_count: 64 * 1024,
        height: 4,
        branching_factor: 4,
    });
    options.set_allow_concurrent_memtable_write(false);
    options
}

/// Six raw RocksDB instances holding the same bytes the stores hold.
fn raw_dbs(
    dir: &Path,
    options: &rocksdb::Options,
    keys: &[String],
    partition: &[usize],
    states: &[HelloState],
) -> Vec<rocksdb::DB> {
    (0..PARTITIONS as usize)
        .map(|p| {
            let db = rocksdb::DB::open(options, dir.join(p.to_string())).expect("open raw db");
            let mine: Vec<usize> = (0..KEYS).filter(|&i| partition[i] == p).collect();
            for chunk in mine.chunks(COMMIT_BATCH) {
                let mut batch = rocksdb::WriteBatch::default();
                for &i in chunk {
                    batch.put(keys[i].as_bytes(), codec::encode_state(&states[i]));
                }
                db.write(batch).expect("write raw db");
            }
            db
        })
        .collect()
}

/// What-if for `StateCache`'s probe: the same 16 mutex-guarded shards per store, but keys of up
/// to 31 bytes are stored inside the entry (comparing them chases no pointer) and a key is
/// hashed with a cheap multiplicative hash instead of SipHash twice. Holds every key of one
/// partition, filled once, read only.
struct InlineCache {
    shards: Vec<std::sync::Mutex<std::collections::HashMap<InlineKey, HelloState, FxBuild>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct InlineKey {
    len: u8,
    bytes: [u8; 31],
}

impl InlineKey {
    fn new(key: &[u8]) -> InlineKey {
        let mut bytes = [0; 31];
        bytes[..key.len()].copy_from_slice(key);
        InlineKey {
            len: key.len() as u8,
            bytes,
        }
    }
}

impl std::hash::Hash for InlineKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..self.len as usize]);
    }
}

/// FxHash's word step with a murmur3 finaliser (so the low bits hashbrown indexes by mix).
#[derive(Default)]
struct Fx(u64);

type FxBuild = std::hash::BuildHasherDefault<Fx>;

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

impl InlineCache {
    fn new(data: &Data, partition: usize) -> InlineCache {
        let cache = InlineCache {
            shards: (0..16).map(|_| Default::default()).collect(),
        };
        for i in (0..KEYS).filter(|&i| data.partition[i] == partition) {
            let key = InlineKey::new(data.keys[i].as_bytes());
            cache.shard(&key).insert(key, data.states[i]);
        }
        cache
    }

    /// One per partition.
    fn all(data: &Data) -> Vec<InlineCache> {
        (0..PARTITIONS as usize)
            .map(|p| InlineCache::new(data, p))
            .collect()
    }

    fn shard(
        &self,
        key: &InlineKey,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<InlineKey, HelloState, FxBuild>> {
        use std::hash::BuildHasher;
        let shard = (FxBuild::default().hash_one(key) >> 60) as usize;
        self.shards[shard].lock().unwrap()
    }

    /// `None` also for keys too long to be stored inline.
    fn get(&self, key: &[u8]) -> Option<HelloState> {
        if key.len() > 31 {
            return None;
        }
        let key = InlineKey::new(key);
        self.shard(&key).get(&key).copied()
    }
}

/// Serve-mode what-if (`SERVE_WHATIF=1`): `LocalState::lookup` with the partition map as a
/// fixed table (no `RwLock`, no `Arc` clone: what a lock-free snapshot of the map would
/// cost) over the stores and their read cache, or, with `inline`, over `InlineCache`s
/// instead of the stores' caches. Status, metrics and readiness come from `local`.
struct WhatIfQuery {
    local: Arc<LocalState>,
    stores: Vec<Arc<Store>>,
    inline: Option<Vec<InlineCache>>,
}

impl StateQuery for WhatIfQuery {
    fn lookup(&self, key: &[u8]) -> Lookup {
        let key = match validate_key(Some(key)) {
            Ok(key) => key.as_bytes(),
            Err(poison) => return Lookup::InvalidKey(poison),
        };
        let partition = partition_for_key(key, PARTITIONS) as usize;
        let store = &self.stores[partition];
        let state = match &self.inline {
            Some(caches) => caches[partition]
                .get(key)
                .map(|s| s.effective(store.epoch())),
            None => match store.get(key) {
                Ok(state) => state,
                Err(error) => return Lookup::Failed(error.to_string()),
            },
        };
        match state {
            Some(state) => Lookup::Found(state),
            None => Lookup::NotFound,
        }
    }

    fn status(&self) -> Status {
        self.local.status()
    }

    fn metrics(&self) -> String {
        self.local.metrics()
    }

    fn ready(&self) -> bool {
        self.local.ready()
    }
}

/// The bench's data, as the daemon would hold it.
struct Data {
    keys: Vec<String>,
    /// The partition of each key.
    partition: Vec<usize>,
    states: Vec<HelloState>,
}

impl Data {
    fn new() -> Data {
        let keys: Vec<String> = (0..KEYS).map(key).collect();
        let partition = keys
            .iter()
            .map(|k| partition_for_key(k.as_bytes(), PARTITIONS) as usize)
            .collect();
        let states = (0..KEYS).map(state).collect();
        Data {
            keys,
            partition,
            states,
        }
    }

    /// One store per partition under `dir`, as the daemon lays them out, each with a read
    /// cache of `cache_per_store` entries (0: none); commits of 5,000 changes.
    fn stores(&self, dir: &Path, cache_per_store: usize) -> Vec<Arc<Store>> {
        (0..PARTITIONS as usize)
            .map(|p| {
                let store = Store::open(&dir.join(p.to_string()))
                    .expect("open store")
                    .with_read_cache(cache_per_store);
                let mine: Vec<usize> = (0..KEYS).filter(|&i| self.partition[i] == p).collect();
                for (n, chunk) in mine.chunks(COMMIT_BATCH).enumerate() {
                    let changes = chunk.iter().map(|&i| Change {
                        key: self.keys[i].as_bytes(),
                        state: &self.states[i],
                    });
                    store.commit(changes, None, n as u64 + 1).expect("commit");
                }
                Arc::new(store)
            })
            .collect()
    }

    /// A running instance's `LocalState` with every partition active on `stores`; reads every
    /// key once through it (which checks the values and fills the stores' read caches).
    fn local_state(&self, config: &Config, stores: &[Arc<Store>]) -> Arc<LocalState> {
        let local = Arc::new(LocalState::new(
            config,
            "bench",
            PARTITIONS,
            Arc::new(OwnerTable::default()),
            Arc::new(Metrics::default()),
        ));
        for (p, store) in stores.iter().enumerate() {
            local.set_active(p as i32, store.clone());
        }
        local.set_running(true);
        local.set_joined(0);
        for (i, k) in self.keys.iter().enumerate() {
            match local.lookup(k.as_bytes()) {
                Lookup::Found(s) => assert_eq!(s, self.states[i]),
                other => panic!("{k}: {other:?}"),
            }
        }
        local
    }
}

/// The share of reads a warm read cache of `per_store` entries per store answers: the warm-up
/// (every key once) and the reads replayed on `StateCache`s of that size. The stores' caches
/// are private and seed their shard hash at random, so this is the same distribution as
/// theirs, not the same draw.
fn simulated_hit_rate(per_store: usize, data: &Data, reads: &[[u8; KEY_LEN]], parts: &[u8]) -> f64 {
    if per_store == 0 {
        return 0.0;
    }
    let caches: Vec<StateCache> = (0..PARTITIONS)
        .map(|_| StateCache::new(per_store))
        .collect();
    let read = |p: usize, key: &[u8]| match caches[p].get(key) {
        Cached::Hit(_) => true,
        Cached::Miss(ticket) => {
            caches[p].fill(Some(HelloState::default()), ticket);
            false
        }
    };
    for (k, &p) in data.keys.iter().zip(&data.partition) {
        read(p, k.as_bytes());
    }
    let hits = reads
        .iter()
        .zip(parts)
        .filter(|(k, &p)| read(p as usize, &k[..]))
        .count();
    hits as f64 / reads.len() as f64
}

/// `READ_PATH_SERVE=<seconds>`: instead of measuring, serve the loaded stores over RESP for
/// that long (or until SIGTERM), on a runtime of `SERVE_WORKERS` (2) workers: a `LocalState`
/// over the stores without a read cache on `SERVE_PORT` (a free port unless set), and a
/// `LocalState` over stores with the read cache on the next port (the next free one when
/// `SERVE_PORT` is not set), for redis-benchmark runs without Kafka. The cache holds
/// `SERVE_CACHE_ENTRIES` states in all (default: the configured `query.cache_max_entries`),
/// split over the partitions as the daemon splits it; every key was read once through both
/// before serving starts. `SERVE_FLUSH=1` flushes the stores first. Prints one line with the
/// addresses.
///
/// Experiments: `SERVE_RUNTIME=current_thread` serves on a single-threaded runtime instead
/// (`SERVE_WORKERS` is then ignored); `SERVE_WHATIF=1` adds two listeners (ports +2 and +3)
/// serving `WhatIfQuery` over the cached stores: the partition map as a fixed table, and that
/// plus `InlineCache`s in place of the stores' caches.
fn serve_mode(secs: u64, config: &Config, data: &Data, dir: &Path, stores: Vec<Arc<Store>>) {
    let workers = env_count("SERVE_WORKERS", 2).max(1);
    let port = env_count("SERVE_PORT", 0) as u16;
    let cache_entries = env_count("SERVE_CACHE_ENTRIES", config.query.cache_max_entries);
    let per_store = cache_entries / PARTITIONS as usize;
    let current_thread = std::env::var("SERVE_RUNTIME").is_ok_and(|v| v == "current_thread");
    let whatif = std::env::var("SERVE_WHATIF").is_ok_and(|v| v == "1");
    let cached_stores = data.stores(&dir.join("serve-cached"), per_store);
    if std::env::var("SERVE_FLUSH").is_ok_and(|v| v == "1") {
        for store in stores.iter().chain(&cached_stores) {
            store.flush().expect("flush");
        }
    }
    let local = data.local_state(config, &stores);
    let cached = data.local_state(config, &cached_stores);
    let whatifs: Vec<Arc<dyn StateQuery>> = if whatif {
        [None, Some(InlineCache::all(data))]
            .into_iter()
            .map(|inline| {
                let query: Arc<dyn StateQuery> = Arc::new(WhatIfQuery {
                    local: cached.clone(),
                    stores: cached_stores.clone(),
                    inline,
                });
                query
            })
            .collect()
    } else {
        Vec::new()
    };
    let runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("query")
            .enable_all()
            .build()
            .expect("runtime")
    };
    let (trigger, stop) = shutdown::channel();
    let bind = |offset: u16| {
        let port = if port == 0 { 0 } else { port + offset };
        runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("bind resp")
    };
    let plain_listener = bind(0);
    let cached_listener = bind(1);
    let shape = if current_thread {
        "a current-thread runtime".to_owned()
    } else {
        format!("{workers} workers")
    };
    println!(
        "serving {KEYS} keys for {secs} s on {shape}: LocalState at {}, \
         LocalState with a read cache of {per_store} entries per store at {}",
        plain_listener.local_addr().unwrap(),
        cached_listener.local_addr().unwrap()
    );
    let limits = RespLimits::default();
    let mut whatif_tasks = Vec::new();
    for (n, query) in whatifs.into_iter().enumerate() {
        let listener = bind(2 + n as u16);
        println!(
            "what-if {}: {}",
            [
                "fixed partition table",
                "fixed partition table + inline-key cache"
            ][n],
            listener.local_addr().unwrap()
        );
        whatif_tasks.push(runtime.spawn(resp::serve(
            listener,
            RespServer::open(query, limits),
            stop.clone(),
        )));
    }
    let plain: Arc<dyn StateQuery> = local;
    let cached: Arc<dyn StateQuery> = cached;
    let a = runtime.spawn(resp::serve(
        plain_listener,
        RespServer::open(plain, limits),
        stop.clone(),
    ));
    let b = runtime.spawn(resp::serve(
        cached_listener,
        RespServer::open(cached, limits),
        stop,
    ));
    // Until the time is up or SIGTERM/SIGINT; returning lets the temp dir be removed.
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    trigger.fire();
    let _ = runtime.block_on(a);
    let _ = runtime.block_on(b);
    for task in whatif_tasks {
        let _ = runtime.block_on(task);
    }
}

fn free_port() -> u16 {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// A redis-server of our own, stopped by its pid (SIGTERM) when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(dir: &Path) -> Option<RedisServer> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", dir.to_str().unwrap()])
            .args(["--logfile", dir.join("redis.log").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                eprintln!("redis-server not started ({error}); skipping the Redis row");
                return None;
            }
        };
        let server = RedisServer { child, port };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
        for _ in 0..100 {
            if let Ok(mut con) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return Some(server);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("redis-server did not answer on port {port}; skipping the Redis row");
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request at a time over a synchronous connection: GET `keys[i]`, expecting a number.
fn get_case(name: String, addr: SocketAddr, keys: &[[u8; KEY_LEN]]) -> Case<'_> {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut con = client.get_connection().expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    case("loopback", &name.clone(), move |i| {
        let value: Option<u64> = redis::cmd("GET")
            .arg(&keys[i][..])
            .query(&mut con)
            .expect("GET");
        assert!(
            value.is_some(),
            "{name}: key {} not found",
            keys[i].escape_ascii()
        );
        black_box(value);
    })
}

/// `Store::get` of the `i`th read on the store of its partition.
fn get_on<'a>(
    stores: &'a [Arc<Store>],
    seq: &'a [[u8; KEY_LEN]],
    parts: &'a [u8],
) -> impl Fn(usize) + Sync + Copy + 'a {
    move |i| {
        black_box(stores[parts[i] as usize].get(&seq[i]).unwrap());
    }
}

/// `LocalState::lookup` of the `i`th read.
fn lookup_on<'a>(
    local: &'a LocalState,
    seq: &'a [[u8; KEY_LEN]],
) -> impl Fn(usize) + Sync + Copy + 'a {
    move |i| {
        black_box(local.lookup(&seq[i]));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there are no options besides the environment.
    let reads = env_count("READS", 1_000_000);
    let net_reads = env_count("NET_READS", 100_000);
    let rounds = env_count("ROUNDS", 3).max(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::Builder::new()
        .prefix("hs-read-path-")
        .tempdir()
        .expect("temp dir");
    let config = config::load(&Sources::default()).expect("configuration");
    let data = Data::new();

    eprintln!("loading {KEYS} keys into {PARTITIONS} partition stores...");
    let load_start = Instant::now();
    let stores = data.stores(&tmp.path().join("stores"), 0);
    let load_secs = load_start.elapsed().as_secs_f64();
    eprintln!("loaded in {load_secs:.2} s");

    // The read sequences: random keys, laid out flat in read order (see `measure`).
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sequence = |rng: &mut Rng, n: usize| -> (Vec<[u8; KEY_LEN]>, Vec<u8>) {
        (0..n)
            .map(|_| {
                let i = rng.index(KEYS);
                let k: [u8; KEY_LEN] = data.keys[i].as_bytes().try_into().unwrap();
                (k, data.partition[i] as u8)
            })
            .unzip()
    };
    let (seq, seq_part) = sequence(&mut rng, reads);
    let (net_seq, net_part) = sequence(&mut rng, net_reads);

    if let Some(secs) = std::env::var("READ_PATH_SERVE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        serve_mode(secs, &config, &data, tmp.path(), stores);
        return;
    }

    // The daemon's split of `query.cache_max_entries`, and a cache that holds every key.
    let cache_entries = env_count("CACHE_ENTRIES", config.query.cache_max_entries);
    let default_per_store = cache_entries / PARTITIONS as usize;
    let sized = data.stores(&tmp.path().join("sized"), default_per_store);
    let fits = data.stores(&tmp.path().join("fits"), KEYS);
    let local = data.local_state(&config, &stores);
    let local_sized = data.local_state(&config, &sized);
    let local_fits = data.local_state(&config, &fits);
    let hit_rate_sized = simulated_hit_rate(default_per_store, &data, &seq, &seq_part);
    let hit_rate_fits = simulated_hit_rate(KEYS, &data, &seq, &seq_part);
    let net_hit_rate_sized = simulated_hit_rate(default_per_store, &data, &net_seq, &net_part);
    eprintln!(
        "read cache: {default_per_store} entries per store ({cache_entries} in all) answers \
         {:.1}% of the reads once warm (simulated); {KEYS} per store: {:.1}%",
        100.0 * hit_rate_sized,
        100.0 * hit_rate_fits
    );
    let sized_label = format!("read cache {default_per_store}/store");
    let fits_label = format!("read cache {KEYS}/store");

    let timer_ns = timer_overhead_ns(reads);
    eprintln!("timer overhead (Instant::now + elapsed, p50): {timer_ns} ns");
    let store_get = get_on(&stores, &seq, &seq_part);
    let lookup = lookup_on(&local, &seq);
    let sized_get = get_on(&sized, &seq, &seq_part);
    let sized_lookup = lookup_on(&local_sized, &seq);
    let fits_get = get_on(&fits, &seq, &seq_part);
    let fits_lookup = lookup_on(&local_fits, &seq);
    let raw = raw_dbs(
        &tmp.path().join("raw"),
        &store_options(),
        &data.keys,
        &data.partition,
        &data.states,
    );
    let hashed = raw_dbs(
        &tmp.path().join("hashed"),
        &hash_memtable_options(),
        &data.keys,
        &data.partition,
        &data.states,
    );
    let read_options = rocksdb::ReadOptions::default();
    // One `StateCache` per partition holding all of its keys, probed on its own.
    // Replicas of `LocalState::lookup`'s routing over the stores whose cache holds every key:
    // as it does it minus the `Arc<Store>` clone (the store is read under the read guard), and
    // with no lock at all (a fixed table, the floor for any lock-free partition map).
    let locked_map: std::sync::RwLock<std::collections::HashMap<i32, Arc<Store>>> =
        std::sync::RwLock::new((0..PARTITIONS).zip(fits.iter().cloned()).collect());
    let under_guard = |i: usize| {
        let key = validate_key(Some(&seq[i])).unwrap();
        let partition = partition_for_key(key.as_bytes(), PARTITIONS);
        let map = locked_map.read().unwrap();
        black_box(map[&partition].get(key.as_bytes()).unwrap());
    };
    let no_lock = |i: usize| {
        let key = validate_key(Some(&seq[i])).unwrap();
        let partition = partition_for_key(key.as_bytes(), PARTITIONS);
        black_box(fits[partition as usize].get(key.as_bytes()).unwrap());
    };
    let hasher = std::hash::RandomState::new();
    let inline_caches = InlineCache::all(&data);
    let inline_get = |i: usize| {
        black_box(inline_caches[seq_part[i] as usize].get(&seq[i]).unwrap());
    };
    let caches: Vec<StateCache> = (0..PARTITIONS).map(|_| StateCache::new(KEYS)).collect();
    for (i, k) in data.keys.iter().enumerate() {
        let cache = &caches[data.partition[i]];
        if let Cached::Miss(ticket) = cache.get(k.as_bytes()) {
            cache.fill(Some(data.states[i]), ticket);
        }
    }
    let cache_hit = |i: usize| {
        black_box(matches!(
            caches[seq_part[i] as usize].get(&seq[i]),
            Cached::Hit(_)
        ));
    };

    let mem = |what: &str, label: &str| format!("{what} ({label}, memtable)");
    eprintln!("in process, data in the memtable: {rounds} x {reads} random reads per row");
    let mut cases = vec![
        case("query path", "Store::get (no cache, memtable)", store_get),
        case(
            "query path",
            "LocalState::lookup (no cache, memtable)",
            lookup,
        ),
        case("query path", &mem("Store::get", &sized_label), sized_get),
        case(
            "query path",
            &mem("LocalState::lookup", &sized_label),
            sized_lookup,
        ),
        case("query path", &mem("Store::get", &fits_label), fits_get),
        case(
            "query path",
            &mem("LocalState::lookup", &fits_label),
            fits_lookup,
        ),
        case("breakdown", "domain::validate_key", |i| {
            black_box(validate_key(Some(&seq[i])).is_ok());
        }),
        case("breakdown", "partitioner::partition_for_key", |i| {
            black_box(partition_for_key(&seq[i], PARTITIONS));
        }),
        case(
            "breakdown",
            "RandomState::hash_one(key) (SipHash-1-3)",
            |i| {
                black_box(std::hash::BuildHasher::hash_one(&hasher, &seq[i][..]));
            },
        ),
        case("breakdown", "StateCache::get (hit)", cache_hit),
        case("what-if", INLINE, inline_get),
        case("what-if", UNDER_GUARD, under_guard),
        case("what-if", NO_LOCK, no_lock),
        case(
            "what-if",
            "raw get_pinned, store options (= Store::get)",
            |i| {
                let value = raw[seq_part[i] as usize].get_pinned(seq[i]).unwrap();
                black_box(value.map(|v| v.len()));
            },
        ),
        case(
            "what-if",
            "raw get_pinned_opt, one reused ReadOptions",
            |i| {
                let db = &raw[seq_part[i] as usize];
                let value = db.get_pinned_opt(seq[i], &read_options).unwrap();
                black_box(value.map(|v| v.len()));
            },
        ),
        case(
            "what-if",
            "raw get_pinned_opt, hash memtable, reused opts",
            |i| {
                let db = &hashed[seq_part[i] as usize];
                let value = db.get_pinned_opt(seq[i], &read_options).unwrap();
                black_box(value.map(|v| v.len()));
            },
        ),
    ];
    let mut rows = run_cases(&mut cases, reads, rounds);
    drop(cases);
    drop(hashed);
    drop(raw);
    let row = |name: &str| rows.iter().find(|r| r.name == name).unwrap().clone();

    eprintln!("{THREADS} threads at once, memtable:");
    let parallel: [(String, &(dyn Fn(usize) + Sync)); 10] = [
        ("Store::get (no cache, memtable)".into(), &store_get),
        ("LocalState::lookup (no cache, memtable)".into(), &lookup),
        (mem("Store::get", &sized_label), &sized_get),
        (mem("LocalState::lookup", &sized_label), &sized_lookup),
        (mem("Store::get", &fits_label), &fits_get),
        (mem("LocalState::lookup", &fits_label), &fits_lookup),
        ("StateCache::get (hit)".into(), &cache_hit),
        (INLINE.into(), &inline_get),
        (UNDER_GUARD.into(), &under_guard),
        (NO_LOCK.into(), &no_lock),
    ];
    let par_rows: Vec<ParRow> = parallel
        .iter()
        .map(|(name, read)| measure_parallel(name, THREADS, reads, &row(name), *read))
        .collect();

    let skip_net = std::env::var("READ_PATH_NET").is_ok_and(|v| v == "0");
    let mut redis_version = None;
    if skip_net {
        eprintln!("READ_PATH_NET=0: skipping the loopback rows");
    } else {
        // hello-streams' RESP server over loopback, on a runtime shaped like the daemon's.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("query")
            .enable_all()
            .build()
            .expect("runtime");
        let (trigger, stop) = shutdown::channel();
        let serve = |query: Arc<dyn StateQuery>| {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("bind resp");
            let addr = listener.local_addr().unwrap();
            let task = runtime.spawn(resp::serve(
                listener,
                RespServer::open(query, RespLimits::default()),
                stop.clone(),
            ));
            (addr, task)
        };
        let (plain_addr, plain_task) = serve(local.clone());
        let (sized_addr, sized_task) = serve(local_sized.clone());

        let redis_dir = tmp.path().join("redis");
        std::fs::create_dir_all(&redis_dir).unwrap();
        let redis = RedisServer::start(&redis_dir);
        let mut cases = vec![
            get_case(
                "GET via hello-streams RESP (no cache, memtable)".into(),
                plain_addr,
                &net_seq,
            ),
            get_case(
                format!("GET via hello-streams RESP ({sized_label}, memtable)"),
                sized_addr,
                &net_seq,
            ),
        ];
        if let Some(redis) = &redis {
            let addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
            let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
            let mut con = client.get_connection().expect("connect to redis");
            for chunk in (0..KEYS).collect::<Vec<_>>().chunks(10_000) {
                let mut pipe = redis::pipe();
                for &i in chunk {
                    pipe.cmd("SET")
                        .arg(&data.keys[i])
                        .arg(data.states[i].hello_count)
                        .ignore();
                }
                pipe.query::<()>(&mut con).expect("load redis");
            }
            let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
            redis_version = info
                .lines()
                .find_map(|l| l.strip_prefix("redis_version:"))
                .map(|v| v.trim().to_owned());
            cases.push(get_case("GET via redis-server".into(), addr, &net_seq));
        }
        eprintln!("over loopback, one GET at a time: {rounds} x {net_reads} random reads per row");
        rows.extend(run_cases(&mut cases, net_reads, rounds));
        drop(cases);
        drop(redis);
        trigger.fire();
        let _ = runtime.block_on(plain_task);
        let _ = runtime.block_on(sized_task);
        drop(runtime);
    }

    for store in stores.iter().chain(&sized) {
        store.flush().expect("flush");
    }
    let sst = |what: &str, label: &str| format!("{what} ({label}, sst)");
    eprintln!("in process, data flushed to SST files: {rounds} x {reads} random reads per row");
    let mut cases = vec![
        case("query path", "Store::get (no cache, sst)", store_get),
        case("query path", "LocalState::lookup (no cache, sst)", lookup),
        case("query path", &sst("Store::get", &sized_label), sized_get),
        case(
            "query path",
            &sst("LocalState::lookup", &sized_label),
            sized_lookup,
        ),
    ];
    rows.extend(run_cases(&mut cases, reads, rounds));
    drop(cases);

    let cache = CacheInfo {
        entries: cache_entries,
        per_store: default_per_store,
        label: sized_label,
        hit_rate: hit_rate_sized,
        net_hit_rate: net_hit_rate_sized,
        hit_rate_fits,
    };
    let run = RunInfo {
        timer_ns,
        load_secs,
        redis_version,
    };
    print_and_write(&root, &rows, &par_rows, &cache, &run);
}

/// The read cache the daemon-sized rows ran with.
struct CacheInfo {
    entries: usize,
    per_store: usize,
    /// What the rows call it ("read cache N/store").
    label: String,
    /// Simulated share of hits over the in-process and the loopback read sequences.
    hit_rate: f64,
    net_hit_rate: f64,
    hit_rate_fits: f64,
}

struct RunInfo {
    timer_ns: u64,
    load_secs: f64,
    redis_version: Option<String>,
}

/// Prints the tables and writes `bench/results/read-path-inprocess.json`.
fn print_and_write(
    root: &Path,
    rows: &[Row],
    par_rows: &[ParRow],
    cache: &CacheInfo,
    run: &RunInfo,
) {
    let mut table = String::new();
    table.push_str(
        "| group | read | reads | p50 ns | p90 ns | p99 ns | p99.9 ns | max ns | mean ns | reads/s (1 thread) |\n",
    );
    table.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |\n",
            r.group,
            r.name,
            r.reads,
            r.p50_ns,
            r.p90_ns,
            r.p99_ns,
            r.p999_ns,
            r.max_ns,
            r.mean_batch_ns,
            r.ops_per_sec()
        ));
    }
    let mut par_table = String::new();
    par_table.push_str("| read | threads | reads/s | vs 1 thread |\n|---|---:|---:|---:|\n");
    for r in par_rows {
        par_table.push_str(&format!(
            "| {} | {} | {:.0} | {:.2}x |\n",
            r.name,
            r.threads,
            r.reads_per_sec,
            r.reads_per_sec / r.single_thread_reads_per_sec
        ));
    }
    // The target is about the read path the daemon runs: `LocalState::lookup` over stores with
    // the read cache sized as configured. The uncached worst is reported next to it.
    let worst_p50 = |tag: &str| {
        rows.iter()
            .filter(|r| r.name.starts_with("LocalState::lookup") && r.name.contains(tag))
            .map(|r| r.p50_ns)
            .max()
            .unwrap_or(u64::MAX)
    };
    let lookup_p50 = worst_p50(&format!("({},", cache.label));
    let uncached_p50 = worst_p50("(no cache,");
    let target_met = lookup_p50 <= 1_000;
    println!();
    println!(
        "read_path: {KEYS} keys in {PARTITIONS} stores; timer overhead {} ns \
         (included in p50/p99; the mean is from an untimed pass)",
        run.timer_ns
    );
    println!(
        "read cache: {} entries in all ({} per store); simulated hits once warm: {:.1}% of the \
         in-process reads, {:.1}% of the loopback reads; {KEYS} per store: {:.1}%",
        cache.entries,
        cache.per_store,
        100.0 * cache.hit_rate,
        100.0 * cache.net_hit_rate,
        100.0 * cache.hit_rate_fits
    );
    println!("{table}");
    println!("{par_table}");
    println!(
        "target in-process read p50 <= 1000 ns: {} (worst LocalState::lookup p50 with the \
         {}: {lookup_p50} ns; without a cache: {uncached_p50} ns)",
        if target_met { "met" } else { "NOT met" },
        cache.label,
    );

    let results = root.join("bench/results");
    std::fs::create_dir_all(&results).expect("bench/results");
    let json =
        format!(
        "{{\n  \"bench\": \"read_path\",\n  \"keys\": {KEYS},\n  \"partitions\": {PARTITIONS},\n  \
         \"cpus\": {},\n  \"load_secs\": {:.3},\n  \"timer_overhead_ns\": {},\n  \
         \"redis_version\": {},\n  \"cache_max_entries\": {},\n  \
         \"cache_entries_per_store\": {},\n  \"cache_hit_rate_simulated\": {:.4},\n  \
         \"cache_hit_rate_loopback_simulated\": {:.4},\n  \
         \"cache_hit_rate_every_key_fits_simulated\": {:.4},\n  \
         \"target_in_process_p50_ns\": 1000,\n  \"worst_lookup_p50_ns\": {lookup_p50},\n  \
         \"worst_uncached_lookup_p50_ns\": {uncached_p50},\n  \"target_met\": {target_met},\n  \
         \"rows\": [\n    {}\n  ],\n  \"parallel\": [\n    {}\n  ]\n}}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        run.load_secs,
        run.timer_ns,
        run.redis_version
            .as_ref()
            .map_or("null".to_owned(), |v| format!("\"{v}\"")),
        cache.entries,
        cache.per_store,
        cache.hit_rate,
        cache.net_hit_rate,
        cache.hit_rate_fits,
        rows.iter().map(Row::json).collect::<Vec<_>>().join(",\n    "),
        par_rows
            .iter()
            .map(ParRow::json)
            .collect::<Vec<_>>()
            .join(",\n    ")
    );
    let path = results.join("read-path-inprocess.json");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(json.as_bytes()))
        .expect("write results");
    println!("wrote {}", path.display());
}
