//! `hello-streams-bench`: end-to-end throughput and latency of the daemon on a real broker.
//!
//! Phase 1 (throughput): N events over K keys are loaded into a fresh input topic, then the
//! daemon starts and the clock runs from its start to the last committed output record.
//! Phase 2 (latency): events are produced at a fixed rate while the daemon runs; each output
//! record's latency is the time from the event's producer timestamp to when a read_committed
//! consumer receives it. CPU seconds and peak RSS come from /proc for the daemon's pid.
//! Everything is on 127.0.0.1 and bounded by --timeout-secs.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

#[derive(Debug, Parser)]
#[command(about = "End-to-end benchmark of hello-streams against a real Kafka broker")]
struct Args {
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_servers: String,
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[arg(long, default_value = "exactly_once")]
    guarantee: String,
    /// Events per second during the latency phase (0 skips it)
    #[arg(long, default_value_t = 20_000)]
    latency_rate: u64,
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// The daemon binary (default: beside this one)
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Write the results as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Key i % keys for event i instead of random keys, so every key occurs (drill sizing)
    #[arg(long)]
    sequential_keys: bool,
    /// Keep the daemon's state directory (printed) for a drill afterwards
    #[arg(long)]
    keep_state: bool,
    /// Passed on to the daemon as `--set section.field=value`, after the bench's own
    /// (e.g. `--set app.stream_threads=2`, `--set log.filter=info`)
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    daemon_set: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let run_id = format!("bench-{}", std::process::id());
    let input = format!("{run_id}-events");
    let output = format!("{run_id}-counts");
    let state = tempfile_dir(&run_id)?;
    let daemon_bin = args.daemon.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("hello-streams")))
            .unwrap_or_else(|| "hello-streams".into())
    });
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);

    create_topic(&args, &input)?;
    // The reader subscribes before the daemon starts, so the output must exist already.
    create_topic(&args, &output)?;
    println!(
        "loading {} events over {} keys into {} partitions of {input}",
        args.events, args.keys, args.partitions
    );
    let loaded = Instant::now();
    produce(
        &args.bootstrap_servers,
        args.keys,
        &input,
        args.events,
        0,
        None,
        args.sequential_keys,
        deadline,
    )?;
    println!("loaded in {:.1}s", loaded.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut daemon = start_daemon(&args, &daemon_bin, &run_id, &input, &output, &state)?;
    let reader = committed_reader(&args, &output)?;
    let mut seen = 0u64;
    let mut last_progress = Instant::now();
    while seen < args.events {
        if Instant::now() > deadline {
            return Err(format!("timed out with {seen}/{} outputs", args.events).into());
        }
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => return Err(e.into()),
        }
        if last_progress.elapsed() > Duration::from_secs(2) {
            last_progress = Instant::now();
            println!(
                "  {seen}/{} outputs committed, {:.0} events/s so far",
                args.events,
                seen as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let throughput_secs = started.elapsed().as_secs_f64();
    let throughput = args.events as f64 / throughput_secs;
    println!("throughput: {throughput:.0} events/s ({} events in {throughput_secs:.2}s, daemon start included)", args.events);

    let mut latency = None;
    if args.latency_rate > 0 {
        let n = args.latency_rate * args.latency_secs;
        println!(
            "latency phase: {n} events at {} events/s",
            args.latency_rate
        );
        let producer_deadline = deadline;
        let bootstrap = args.bootstrap_servers.clone();
        let (keys, rate, topic) = (args.keys, args.latency_rate, input.clone());
        let feeder = std::thread::spawn(move || {
            produce(
                &bootstrap,
                keys,
                &topic,
                n,
                1_000_000_000,
                Some(rate),
                false,
                producer_deadline,
            )
            .map_err(|e| e.to_string())
        });
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut got = 0;
        while got < n {
            if Instant::now() > deadline {
                return Err(format!("latency phase timed out with {got}/{n} outputs").into());
            }
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or_default())?;
                    let sent = v["eventTimestamp"].as_i64().unwrap_or(0);
                    let micros = (now_ms() - sent).max(0) as u64 * 1000;
                    histogram.record(micros.max(1))?;
                    got += 1;
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
        feeder.join().map_err(|_| "feeder panicked")??;
        let p50 = histogram.value_at_quantile(0.50) as f64 / 1000.0;
        let p99 = histogram.value_at_quantile(0.99) as f64 / 1000.0;
        println!("end-to-end latency at {} events/s: p50 {p50:.1} ms, p99 {p99:.1} ms (ms-resolution timestamps)", args.latency_rate);
        latency = Some((p50, p99));
    }

    let (cpu, rss) = proc_usage(daemon.id())?;
    println!(
        "daemon: {cpu:.1} CPU seconds, peak RSS {:.1} MB",
        rss as f64 / 1024.0
    );
    stop(&mut daemon);
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "events": args.events, "keys": args.keys, "partitions": args.partitions,
            "guarantee": args.guarantee, "throughput_events_per_s": throughput,
            "throughput_seconds": throughput_secs,
            "latency_rate": args.latency_rate,
            "latency_p50_ms": latency.map(|l| l.0), "latency_p99_ms": latency.map(|l| l.1),
            "cpu_seconds": cpu, "peak_rss_mb": rss as f64 / 1024.0,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if args.keep_state {
        println!("state kept: hello-streams drill --application-id {run_id} --state-dir {} --bootstrap-servers {}", state.display(), args.bootstrap_servers);
    } else {
        let _ = std::fs::remove_dir_all(&state);
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn tempfile_dir(run_id: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(run_id);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn create_topic(args: &Args, topic: &str) -> Result<(), Box<dyn std::error::Error>> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let topic = NewTopic::new(topic, args.partitions, TopicReplication::Fixed(1));
    for result in runtime.block_on(admin.create_topics([&topic], &AdminOptions::new()))? {
        result.map_err(|(name, code)| format!("create {name}: {code}"))?;
    }
    Ok(())
}

/// Produces `n` hellos over the key space; paced at `rate` events/s when given.
#[allow(clippy::too_many_arguments)]
fn produce(
    bootstrap: &str,
    keys: u64,
    topic: &str,
    n: u64,
    seed: u64,
    rate: Option<u64>,
    sequential: bool,
    deadline: Instant,
) -> Result<(), Box<dyn std::error::Error>> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", if rate.is_some() { "1" } else { "20" })
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = Instant::now();
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("user-{}", if sequential { i % keys } else { x % keys });
        let mut record = BaseRecord::<str, str>::to(topic).key(&key).payload("Hello");
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if Instant::now() > deadline {
            return Err("producing timed out".into());
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

fn start_daemon(
    args: &Args,
    bin: &PathBuf,
    run_id: &str,
    input: &str,
    output: &str,
    state: &PathBuf,
) -> std::io::Result<Child> {
    let log = std::fs::File::create(state.join("daemon.log"))?;
    println!("daemon log: {}", state.join("daemon.log").display());
    let mut command = Command::new(bin);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // A bench killed before it could stop its daemon (SIGKILL, a closed terminal) must
            // not leave the daemon running: it gets SIGTERM when the bench's thread dies.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
        .arg("run")
        .args([
            "--bootstrap-servers",
            &args.bootstrap_servers,
            "--application-id",
            run_id,
        ])
        .arg("--state-dir")
        .arg(state)
        .args(["--http-addr", "127.0.0.1:0", "--resp-addr", "127.0.0.1:0"])
        .args(["--processing-guarantee", &args.guarantee])
        .args([
            "--set",
            &format!("topics.input={input}"),
            "--set",
            &format!("topics.output={output}"),
        ])
        .args([
            "--set",
            &format!("topics.dlq={run_id}-dlq"),
            "--set",
            &format!("topics.windows={run_id}-windows"),
            "--set",
            "log.filter=warn",
        ])
        .args(args.daemon_set.iter().flat_map(|s| ["--set", s.as_str()]))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

fn committed_reader(args: &Args, topic: &str) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("group.id", format!("{topic}-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// CPU seconds (user + system) and peak RSS in KiB of a running process.
fn proc_usage(pid: u32) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((ticks / hz, rss))
}

fn stop(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
