//! `read_path`: how long one read of a key's state takes, from the store to the wire.
//!
//! Data: 100,000 keys `k:000000000000`..`k:000000099999` (the keys `redis-benchmark -r 100000`
//! makes of `k:__rand_int__`) spread over six partition stores exactly as the daemon spreads
//! them (the Java client's murmur2 partitioner), committed with `Store::commit`. The same data
//! is loaded three times: into stores without a read cache, into stores opened with
//! `Store::with_read_cache` sized as the daemon sizes it (`query.cache_max_entries`, 100,000 by
//! default or `CACHE_ENTRIES`, split evenly over the partitions), and into stores whose cache
//! holds every key of its partition (`KEYS` entries each). Every key is read once through each
//! daemon's `StateQuery` before anything is timed (a correctness check that also warms the caches).
//!
//! Query path, in process (1,000,000 random reads per round):
//! - `views::state` on the owning store: without the cache RocksDB `get_pinned` + decode + epoch;
//!   with it one `StateCache` probe when the key hits;
//! - `StateQuery::lookup`, what both query servers call (key validation, murmur2, the
//!   partition's slot behind its `RwLock`, then `views::state`);
//!
//! each for the three kinds of store, while the data sits in the memtable (as right after
//! commits), and for the uncached and daemon-sized stores again after a flush (SST blocks
//! through the block cache: what a miss of the read cache costs then). Whether the daemon-sized
//! cache holds all 100,000 keys depends on how `StateCache` bounds its shards; the share of
//! reads that hit once warm is printed and recorded (replayed on `StateCache`s of the same
//! size, since the stores' own caches are private). Breakdown: `validate_key`,
//! `partition_for_key` and a `StateCache::get` hit on their own, the steps of a cached lookup.
//! Then two threads reading at once (aggregate reads/s), which shows contention on what reads
//! share (the slots' locks, the cache's shard mutexes).
//!
//! Over loopback (100,000 random reads per round, one request at a time with the `redis`
//! crate's synchronous connection): `GET` against hello-streams' RESP server
//! (`query::resp::serve`, in this process, on a two-worker tokio runtime like the daemon's),
//! over the uncached and the daemon-sized stores, and against a real `redis-server` holding the
//! same keys (started here on a free loopback port with no persistence, stopped by pid; skipped
//! when `redis-server` is not installed). Many clients and pipelining are
//! `bench/redis/compare`'s job.
//!
//! Each read is timed on its own with `Instant` (the timer's own cost is printed) to get
//! p50/p99; the mean comes from a second, untimed pass. The keys are read from one flat array
//! in read order, so they are in cache as a request's key is. Every row runs `ROUNDS` times,
//! interleaved with the other rows of its phase, and reports the median of each statistic.
//! Results: tables on stdout and `bench/results/read-path-inprocess.json`. The in-process
//! target (p50 <= 1 µs) is checked on the `StateQuery::lookup` rows of the daemon-sized cache.
//! What earlier what-if rows of this bench found: BENCHMARKS.md, "Why the code is the way it
//! is".
//!
//! Run: `cargo bench --bench read_path` (about 3 minutes). Environment: `READS` (1000000),
//! `NET_READS` (100000), `ROUNDS` (3), `CACHE_ENTRIES` (the configured
//! `query.cache_max_entries`); `READ_PATH_NET=0` keeps to the in-process rows (e.g. under
//! `perf record`). `READ_PATH_SERVE=<seconds>` serves the loaded stores over RESP instead of
//! measuring (see `serve_mode`), for redis-benchmark runs that need no Kafka.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hello_streams::config::{self, Config, Sources};
use hello_streams::engine::application::Application;
use hello_streams::engine::local::LocalState;
use hello_streams::engine::store::cache::{Cached, StateCache};
use hello_streams::engine::store::{Store, Write};
use hello_streams::hello::codec::encode_state;
use hello_streams::hello::domain::{validate_key, HelloState, Mood};
use hello_streams::hello::queries::HelloQueries;
use hello_streams::hello::{views, HelloApp, STATES};
use hello_streams::ownership::OwnerTable;
use hello_streams::partitioner::partition_for_key;
use hello_streams::query::resp::{self, RespLimits, RespServer};
use hello_streams::query::{Lookup, StateQuery};
use hello_streams::shutdown::{self, Shutdown};
use hello_streams::telemetry::Metrics;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use loopback::{get_case, RedisServer};
use results::{print_and_write, CacheInfo, RunInfo};
use timing::{case, measure_parallel, run_cases, timer_overhead_ns, Case, ParRow};

mod loopback;
mod results;
mod timing;

const KEYS: usize = 100_000;
const PARTITIONS: i32 = 6;
const COMMIT_BATCH: usize = 5_000;
const THREADS: usize = 2;

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
                let app = HelloApp::new(&config::load(&Sources::default()).expect("configuration"));
                let store = Store::open(&dir.join(p.to_string()), app.stores())
                    .expect("open store")
                    .with_read_cache(cache_per_store);
                let mine: Vec<usize> = (0..KEYS).filter(|&i| self.partition[i] == p).collect();
                for (n, chunk) in mine.chunks(COMMIT_BATCH).enumerate() {
                    let values: Vec<_> = chunk
                        .iter()
                        .map(|&i| encode_state(&self.states[i]))
                        .collect();
                    let writes = chunk.iter().zip(&values).map(|(&i, value)| Write {
                        store: STATES,
                        key: self.keys[i].as_bytes(),
                        value: Some(&value[..]),
                    });
                    store.commit(writes, &[Some(n as u64 + 1)]).expect("commit");
                }
                Arc::new(store)
            })
            .collect()
    }

    /// A running instance's `StateQuery` (the hello reads over its `LocalState`) with every partition active on `stores`; reads every
    /// key once through it (which checks the values and fills the stores' read caches).
    fn local_state(&self, config: &Config, stores: &[Arc<Store>]) -> Arc<HelloQueries> {
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
        let local = Arc::new(HelloQueries::new(config, local));
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
            caches[p].fill(Some(&encode_state(&HelloState::default())), ticket);
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

/// A multi-threaded runtime of `workers` workers, shaped like the daemon's query runtime.
fn query_runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("query")
        .enable_all()
        .build()
        .expect("runtime")
}

/// hello-streams' RESP server over `query` on loopback `port` (0: a free one), with the
/// default limits, until `stop` fires.
fn spawn_resp(
    runtime: &Runtime,
    query: Arc<dyn StateQuery>,
    port: u16,
    stop: &Shutdown,
) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .expect("bind resp");
    let addr = listener.local_addr().unwrap();
    let server = RespServer::open(query, RespLimits::default());
    (
        addr,
        runtime.spawn(resp::serve(listener, server, stop.clone())),
    )
}

/// `READ_PATH_SERVE=<seconds>`: instead of measuring, serve the loaded stores over RESP for
/// that long (or until SIGTERM), for `bench/redis/serve-compare`'s redis-benchmark runs
/// without Kafka: a `LocalState` over the stores without a read cache on `SERVE_PORT` (a free
/// port unless set), and one over stores with the read cache on the next port (the next free
/// one when `SERVE_PORT` is not set), on a runtime of `SERVE_WORKERS` (2) workers. The cache
/// holds `SERVE_CACHE_ENTRIES` states in all (default: the configured
/// `query.cache_max_entries`), split over the partitions as the daemon splits it; every key
/// was read once through both before serving starts. `SERVE_FLUSH=1` flushes the stores
/// first. Prints one line with the addresses.
fn serve_mode(secs: u64, config: &Config, data: &Data, dir: &Path, stores: Vec<Arc<Store>>) {
    let workers = env_count("SERVE_WORKERS", 2).max(1);
    let port = env_count("SERVE_PORT", 0) as u16;
    let cache_entries = env_count("SERVE_CACHE_ENTRIES", config.query.cache_max_entries);
    let per_store = cache_entries / PARTITIONS as usize;
    let cached_stores = data.stores(&dir.join("serve-cached"), per_store);
    if std::env::var("SERVE_FLUSH").is_ok_and(|v| v == "1") {
        for store in stores.iter().chain(&cached_stores) {
            store.flush().expect("flush");
        }
    }
    let local = data.local_state(config, &stores);
    let cached = data.local_state(config, &cached_stores);
    let runtime = query_runtime(workers);
    let (trigger, stop) = shutdown::channel();
    let port_at = |offset: u16| if port == 0 { 0 } else { port + offset };
    let (plain_addr, plain) = spawn_resp(&runtime, local, port_at(0), &stop);
    let (cached_addr, cached) = spawn_resp(&runtime, cached, port_at(1), &stop);
    println!(
        "serving {KEYS} keys for {secs} s on {workers} workers: LocalState at {plain_addr}, \
         LocalState with a read cache of {per_store} entries per store at {cached_addr}"
    );
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
    let _ = runtime.block_on(plain);
    let _ = runtime.block_on(cached);
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
    if let Some(secs) = std::env::var("READ_PATH_SERVE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        serve_mode(secs, &config, &data, tmp.path(), stores);
        return;
    }

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
    let (seq, seq_part) = (&seq, &seq_part);

    // The daemon's split of `query.cache_max_entries`, and a cache that holds every key.
    let cache_entries = env_count("CACHE_ENTRIES", config.query.cache_max_entries);
    let default_per_store = cache_entries / PARTITIONS as usize;
    let sized = data.stores(&tmp.path().join("sized"), default_per_store);
    let fits = data.stores(&tmp.path().join("fits"), KEYS);
    let local = data.local_state(&config, &stores);
    let local_sized = data.local_state(&config, &sized);
    let local_fits = data.local_state(&config, &fits);
    let hit_rate_sized = simulated_hit_rate(default_per_store, &data, seq, seq_part);
    let hit_rate_fits = simulated_hit_rate(KEYS, &data, seq, seq_part);
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
    // `views::state` on the owning store and `StateQuery::lookup` of the `i`th read, per kind of
    // store; each name lacks the phase that closes its parenthesis.
    type Read<'a> = Box<dyn Fn(usize) + Sync + 'a>;
    let kinds = [
        ("no cache", &stores, &local),
        (sized_label.as_str(), &sized, &local_sized),
        (fits_label.as_str(), &fits, &local_fits),
    ];
    let readers: Vec<(String, Read<'_>)> = kinds
        .into_iter()
        .flat_map(|(label, stores, local)| {
            let get: Read<'_> = Box::new(move |i| {
                black_box(views::state(&stores[seq_part[i] as usize], &seq[i]).unwrap());
            });
            let lookup: Read<'_> = Box::new(move |i| {
                black_box(local.lookup(&seq[i]));
            });
            [
                (format!("views::state ({label}"), get),
                (format!("StateQuery::lookup ({label}"), lookup),
            ]
        })
        .collect();
    // One `StateCache` per partition holding all of its keys, probed on its own.
    let caches: Vec<StateCache> = (0..PARTITIONS).map(|_| StateCache::new(KEYS)).collect();
    for (i, k) in data.keys.iter().enumerate() {
        let cache = &caches[data.partition[i]];
        if let Cached::Miss(ticket) = cache.get(k.as_bytes()) {
            cache.fill(Some(&encode_state(&data.states[i])), ticket);
        }
    }
    let cache_hit = |i: usize| {
        black_box(matches!(
            caches[seq_part[i] as usize].get(&seq[i]),
            Cached::Hit(_)
        ));
    };

    eprintln!("in process, data in the memtable: {rounds} x {reads} random reads per row");
    let mut cases: Vec<Case<'_>> = readers
        .iter()
        .map(|(name, read)| case("query path", &format!("{name}, memtable)"), read))
        .collect();
    cases.push(case("breakdown", "domain::validate_key", |i| {
        black_box(validate_key(Some(&seq[i])).is_ok());
    }));
    cases.push(case("breakdown", "partitioner::partition_for_key", |i| {
        black_box(partition_for_key(&seq[i], PARTITIONS));
    }));
    cases.push(case("breakdown", "StateCache::get (hit)", cache_hit));
    let mut rows = run_cases(&mut cases, reads, rounds);
    drop(cases);
    let row = |name: &str| rows.iter().find(|r| r.name == name).unwrap().clone();

    eprintln!("{THREADS} threads at once, memtable:");
    let mut parallel: Vec<(String, &(dyn Fn(usize) + Sync))> = readers
        .iter()
        .map(|(name, read)| (format!("{name}, memtable)"), &**read as _))
        .collect();
    parallel.push(("StateCache::get (hit)".into(), &cache_hit));
    let par_rows: Vec<ParRow> = parallel
        .iter()
        .map(|(name, read)| measure_parallel(name, THREADS, reads, &row(name), *read))
        .collect();

    let mut redis_version = None;
    if std::env::var("READ_PATH_NET").is_ok_and(|v| v == "0") {
        eprintln!("READ_PATH_NET=0: skipping the loopback rows");
    } else {
        let runtime = query_runtime(2);
        let (trigger, stop) = shutdown::channel();
        let (plain_addr, plain_task) = spawn_resp(&runtime, local.clone(), 0, &stop);
        let (sized_addr, sized_task) = spawn_resp(&runtime, local_sized.clone(), 0, &stop);
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
            redis_version = redis.load(&data);
            cases.push(get_case("GET via redis-server".into(), addr, &net_seq));
        }
        eprintln!("over loopback, one GET at a time: {rounds} x {net_reads} random reads per row");
        rows.extend(run_cases(&mut cases, net_reads, rounds));
        drop(cases);
        drop(redis);
        trigger.fire();
        let _ = runtime.block_on(plain_task);
        let _ = runtime.block_on(sized_task);
    }

    for store in stores.iter().chain(&sized) {
        store.flush().expect("flush");
    }
    eprintln!("in process, data flushed to SST files: {rounds} x {reads} random reads per row");
    // The uncached and daemon-sized kinds.
    let mut cases: Vec<Case<'_>> = readers[..4]
        .iter()
        .map(|(name, read)| case("query path", &format!("{name}, sst)"), read))
        .collect();
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
