//! `hello-streams-projection-bench`: how fast the projections write into PostgreSQL and
//! Redis, and how far they trail a steady stream.
//!
//! Phase 1 (throughput): N `hello-counts` records over K keys (each key's revisions in
//! order, in the format the daemon writes, partitioned by key as the daemon does) are
//! loaded into a fresh topic; then the projection runs in this process and the clock runs
//! from its start (group join included) until it has written the batch holding the last
//! record. Updates/s = N ÷ that time; rows are fewer (a batch writes each key's newest
//! update once). The tables and hashes are checked afterwards: K keys, revisions summing
//! to N. Phase 2 (lag): records are produced at a fixed rate while the projection runs,
//! and its lag (records behind the partition ends) is sampled every 100 ms.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hello_streams::config::{self, Sources};
use hello_streams::partitioner::partition_for_key;
use hello_streams::projection::postgres::{PostgresOptions, PostgresTarget};
use hello_streams::projection::progress::Counters;
use hello_streams::projection::redis::{RedisOptions, RedisTarget};
use hello_streams::projection::{self, Settings, Target};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

#[derive(Debug, Parser)]
#[command(about = "Throughput and lag of the PostgreSQL and Redis projections")]
struct Args {
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    #[arg(long, env = "HELLO_STREAMS_TEST_POSTGRES_URL")]
    postgres: Option<String>,
    #[arg(long, env = "HELLO_STREAMS_TEST_REDIS_URL")]
    redis: Option<String>,
    #[arg(long, default_value_t = 1_000_000)]
    updates: u64,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Records per partition batch
    #[arg(long, default_value_t = 5000)]
    batch_records: usize,
    /// Records per second in the lag phase (0 skips it)
    #[arg(long, default_value_t = 5_000)]
    lag_rate: u64,
    #[arg(long, default_value_t = 10)]
    lag_secs: u64,
}

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let run = format!("pbench-{}", std::process::id());
    let topic = format!("{run}-counts");
    create_topic(&args, &topic)?;
    println!(
        "loading {} updates over {} keys into {} partitions of {topic}",
        args.updates, args.keys, args.partitions
    );
    let loaded = Instant::now();
    let mut revisions = vec![0u64; args.keys as usize];
    LoadArgs::of(&args).produce(&topic, 0, args.updates, None, &mut revisions)?;
    println!("loaded in {:.1}s", loaded.elapsed().as_secs_f64());
    let config = config::load(&Sources {
        file: None,
        env: Vec::new(),
        overrides: vec![
            format!("kafka.bootstrap_servers={:?}", args.bootstrap_servers),
            format!("topics.output={topic:?}"),
            "log.filter=\"warn\"".into(),
        ],
    })?;
    hello_streams::telemetry::init_logging("warn", hello_streams::config::LogFormat::Text);

    if let Some(url) = &args.postgres {
        let db = format!("{}_pg", run.replace('-', "_"));
        let admin = projection::runtime()?;
        admin.block_on(async {
            let client = hello_streams::projection::postgres::connect(url).await?;
            client
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .await?;
            Ok::<_, Error>(())
        })?;
        let options = PostgresOptions {
            url: format!("{url} dbname={db}"),
            create_tables: true,
            event_journal: false,
            entity_type: "HelloState".into(),
        };
        let bench = Bench::new(&args, &config, "postgres")?;
        let group = bench.settings.group.clone();
        let target = bench
            .runtime
            .block_on(PostgresTarget::open(&options, &group))?;
        let (rows, revision_sum) =
            bench.throughput(target, &args, &topic, &mut revisions, |rt| {
                rt.block_on(async {
                    let client = hello_streams::projection::postgres::connect(&options.url).await?;
                    let row = client
                        .query_one(
                            "SELECT count(*), sum(revision)::int8 FROM durable_state",
                            &[],
                        )
                        .await?;
                    Ok::<_, Error>((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
                })
            })?;
        println!("postgres check: {rows} rows, revisions summing to {revision_sum}");
    }
    if let Some(url) = &args.redis {
        let prefix = format!("{run}:");
        let options = RedisOptions {
            url: url.clone(),
            prefix: prefix.clone(),
        };
        let bench = Bench::new(&args, &config, "redis")?;
        let target = bench.runtime.block_on(RedisTarget::open(&options))?;
        let keys = args.keys;
        let (hashes, revision_sum) =
            bench.throughput(target, &args, &topic, &mut revisions, |rt| {
                rt.block_on(async {
                    let mut c = hello_streams::projection::redis::connect(url).await?;
                    let (mut hashes, mut sum) = (0u64, 0u64);
                    for start in (0..keys).step_by(1000) {
                        let mut pipe = redis::pipe();
                        for k in start..(start + 1000).min(keys) {
                            pipe.cmd("HGET")
                                .arg(format!("{prefix}{}", key(k)))
                                .arg("revision");
                        }
                        let got: Vec<Option<u64>> = pipe.query_async(&mut c).await?;
                        hashes += got.iter().flatten().count() as u64;
                        sum += got.iter().flatten().sum::<u64>();
                    }
                    Ok::<_, Error>((hashes, sum))
                })
            })?;
        println!("redis check: {hashes} hashes, revisions summing to {revision_sum}");
    }
    Ok(())
}

fn key(k: u64) -> String {
    format!("user-{k}")
}

struct Bench {
    runtime: tokio::runtime::Runtime,
    settings: Settings,
    config: config::Config,
}

impl Bench {
    fn new(args: &Args, config: &config::Config, target: &str) -> Result<Self, Error> {
        let mut settings = Settings::new(
            config,
            target,
            Some(format!("pbench-{}-{target}", std::process::id())),
        )?;
        settings.batch_records = args.batch_records;
        Ok(Bench {
            runtime: projection::runtime()?,
            settings,
            config: config.clone(),
        })
    }

    /// Phase 1 and, when asked, phase 2; returns what `check` counts in the target.
    fn throughput<T: Target + Send + 'static>(
        self,
        mut target: T,
        args: &Args,
        topic: &str,
        revisions: &mut [u64],
        check: impl FnOnce(&tokio::runtime::Runtime) -> Result<(u64, u64), Error>,
    ) -> Result<(u64, u64), Error> {
        let counters = Arc::new(Counters::default());
        let (trigger, shutdown) = hello_streams::shutdown::channel();
        let started = Instant::now();
        let runner = {
            let counters = counters.clone();
            std::thread::spawn(move || {
                let result = projection::run(
                    &self.config,
                    &self.settings,
                    &self.runtime,
                    &mut target,
                    &counters,
                    &shutdown,
                );
                (result.map_err(|e| e.to_string()), self.runtime)
            })
        };
        let total = args.updates;
        while counters.committed_records.load(Ordering::Relaxed) < total {
            if started.elapsed() > Duration::from_secs(900) || runner.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let seconds = started.elapsed().as_secs_f64();
        let written = counters.written.load(Ordering::Relaxed);
        println!(
            "{}: {total} updates in {seconds:.2}s = {:.0} updates/s ({written} rows written, {:.0} rows/s, {} batches, mean batch {:.1} ms; projection start included)",
            T::NAME,
            total as f64 / seconds,
            written as f64 / seconds,
            counters.batches.load(Ordering::Relaxed),
            counters.batch_micros_total.load(Ordering::Relaxed) as f64
                / counters.batches.load(Ordering::Relaxed).max(1) as f64
                / 1000.0
        );
        if args.lag_rate > 0 {
            let n = args.lag_rate * args.lag_secs;
            let mut samples = Vec::new();
            let sampler_counters = counters.clone();
            let sampling = Instant::now();
            let feeder = {
                let mut revs = revisions.to_vec();
                let (rate, topic, load) = (args.lag_rate, topic.to_owned(), LoadArgs::of(args));
                std::thread::spawn(move || {
                    load.produce(&topic, total, n, Some(rate), &mut revs)
                        .map_err(|e| e.to_string())
                })
            };
            while !feeder.is_finished() {
                std::thread::sleep(Duration::from_millis(100));
                samples.push(sampler_counters.lag.load(Ordering::Relaxed));
            }
            feeder.join().map_err(|_| "feeder panicked")??;
            samples.sort_unstable();
            let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
            println!(
                "{}: lag at {} records/s over {:.0}s: p50 {} records, p99 {}, max {} ({} samples)",
                T::NAME,
                args.lag_rate,
                sampling.elapsed().as_secs_f64(),
                pick(0.5),
                pick(0.99),
                samples.last().copied().unwrap_or(0),
                samples.len()
            );
            let until = total + n;
            while counters.committed_records.load(Ordering::Relaxed) < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        trigger.fire();
        let (result, runtime) = runner.join().map_err(|_| "projection thread panicked")?;
        result?;
        check(&runtime)
    }
}

struct LoadArgs {
    bootstrap: String,
    keys: u64,
    partitions: i32,
}

impl LoadArgs {
    fn of(args: &Args) -> Self {
        LoadArgs {
            bootstrap: args.bootstrap_servers.clone(),
            keys: args.keys,
            partitions: args.partitions,
        }
    }

    /// Produces updates `first..first + n` (key = a hash of the index) at `rate`/s if given.
    fn produce(
        &self,
        topic: &str,
        first: u64,
        n: u64,
        rate: Option<u64>,
        revisions: &mut [u64],
    ) -> Result<(), Error> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", if rate.is_some() { "1" } else { "20" })
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .create()?;
        let started = Instant::now();
        for i in first..first + n {
            let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % self.keys;
            let name = key(k);
            revisions[k as usize] += 1;
            let revision = revisions[k as usize];
            let value = format!(
                r#"{{"key":"{name}","helloCount":{revision},"helloTotalCount":{revision},"mood":"HAPPY","outcome":"counted","reply":"Kotlin","revision":{revision},"sourcePartition":0,"sourceOffset":{i},"eventTimestamp":0,"processedAt":0}}"#
            );
            let partition = partition_for_key(name.as_bytes(), self.partitions);
            let mut record = BaseRecord::to(topic)
                .key(name.as_str())
                .payload(value.as_str())
                .partition(partition);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64((i - first + 1) as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        }
        producer.flush(Duration::from_secs(60))?;
        Ok(())
    }
}

fn create_topic(args: &Args, topic: &str) -> Result<(), Error> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .create()?;
    let runtime = projection::runtime()?;
    let topic = NewTopic::new(topic, args.partitions, TopicReplication::Fixed(1));
    for result in runtime.block_on(admin.create_topics([&topic], &AdminOptions::new()))? {
        result.map_err(|(name, code)| format!("create {name}: {code}"))?;
    }
    Ok(())
}
