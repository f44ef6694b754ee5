//! What the fault cases need beyond `tests/it/common.rs`: the case report and its watchdog,
//! a feeder thread, the open-transaction check, dead-letter accounting, pids of our own
//! daemons, and the separate 3-node cluster's fault commands.
//!
//! Everything here only ever signals processes this test process started (its own children,
//! found by parent pid), and Kafka nodes only through `kafka/local-kafka`, which checks its
//! own pid files.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::common::*;

// ---------------------------------------------------------------------------------------
// The case report: `FAULT-CASE <name> <result> <seconds>s <records verified>`.

/// One running case. Prints its summary line when dropped (PASS, or FAIL while unwinding
/// from a failed assertion); a watchdog ends the case, and every process it started, when
/// it overruns its time limit.
pub struct Case {
    name: String,
    started: Instant,
    records: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    logs: Arc<Mutex<Vec<PathBuf>>>,
    /// The logs were kept already (by the panic hook).
    kept: Arc<AtomicBool>,
}

pub fn case(name: &str, limit: Duration) -> Case {
    let started = Instant::now();
    let records = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::new(AtomicBool::new(false));
    println!(
        "FAULT-CASE-START {name} (limit {}s, kafka {})",
        limit.as_secs(),
        bootstrap()
    );
    // The daemon logs live in the case's App directory, which unwinding removes before the
    // Case is dropped (it is declared after the Case): keep them when the case's own thread
    // panics, before unwinding starts.
    {
        let (name, logs, kept) = (name.to_owned(), logs.clone(), kept.clone());
        let case_thread = std::thread::current().id();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if std::thread::current().id() == case_thread && !kept.swap(true, Ordering::AcqRel) {
                keep_logs(&name, &logs);
            }
        }));
    }
    {
        let (name, records, done, logs) =
            (name.to_owned(), records.clone(), done.clone(), logs.clone());
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                while started.elapsed() < limit {
                    if done.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                if done.load(Ordering::Acquire) {
                    return;
                }
                report(
                    &name,
                    "TIMEOUT",
                    started.elapsed(),
                    records.load(Ordering::Relaxed),
                );
                eprintln!("{name}: over its {limit:?} limit; killing the processes it started");
                kill_own_children();
                keep_logs(&name, &logs);
                std::process::exit(3);
            })
            .expect("watchdog thread");
    }
    Case {
        name: name.to_owned(),
        started,
        records,
        done,
        logs,
        kept,
    }
}

/// On failure: copies the daemon logs of the case to `FAULTS_LOG_DIR` (scripts/faults sets
/// it) and prints the end of each.
fn keep_logs(name: &str, logs: &Mutex<Vec<PathBuf>>) {
    let logs = logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let dir = std::env::var("FAULTS_LOG_DIR").ok().map(PathBuf::from);
    for (i, path) in logs.iter().enumerate() {
        let text = plain(&std::fs::read_to_string(path).unwrap_or_default());
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut kept = String::new();
        if let Some(dir) = &dir {
            let target = dir.join(format!("{name}.daemon-{i:02}-{file}"));
            if std::fs::write(&target, &text).is_ok() {
                kept = format!(" (whole log: {})", target.display());
            }
        }
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("PartitionEOF"))
            .collect();
        eprintln!(
            "---- daemon log {i} {file}{kept}, last lines:\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}
impl Case {
    /// Adds records checked record by record (output records, dead letters, answers).
    pub fn verified(&self, n: usize) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }

    /// Starts a daemon whose log is kept (and shown) if the case fails.
    pub fn start(&self, builder: DaemonBuilder) -> Daemon {
        let d = builder.start();
        self.watch(&d.log_path);
        d
    }

    pub fn watch(&self, log: &Path) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log.to_owned());
    }

    /// A progress line, with the time since the case started.
    pub fn step(&self, what: impl AsRef<str>) {
        println!(
            "[{} +{:6.1}s] {}",
            self.name,
            self.started.elapsed().as_secs_f64(),
            what.as_ref()
        );
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        let result = if std::thread::panicking() {
            if !self.kept.swap(true, Ordering::AcqRel) {
                keep_logs(&self.name, &self.logs);
            }
            "FAIL"
        } else {
            "PASS"
        };
        report(
            &self.name,
            result,
            self.started.elapsed(),
            self.records.load(Ordering::Relaxed),
        );
    }
}

fn report(name: &str, result: &str, took: Duration, records: usize) {
    let line = format!(
        "FAULT-CASE {name} {result} {:.1}s {records}",
        took.as_secs_f64()
    );
    println!("{line}");
    if let Ok(path) = std::env::var("FAULTS_SUMMARY") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Processes: only our own children.

fn proc_stat(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Pids of this process's direct children (live or zombie).
fn own_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(ppid, _)| ppid == me))
        .collect()
}

fn kill_own_children() {
    for pid in own_children() {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The pid of one of our daemons, found among our children by its HTTP port.
pub fn pid_of(daemon: &Daemon) -> i32 {
    try_pid_of(daemon).unwrap_or_else(|| {
        panic!(
            "daemon with http port {} is not our child",
            daemon.http_port
        )
    })
}

/// [`pid_of`]; `None` if the daemon is not (or no longer) a running child of ours.
pub fn try_pid_of(daemon: &Daemon) -> Option<i32> {
    let needle = format!("127.0.0.1:{}", daemon.http_port);
    own_children().into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes())
    })
}

/// True while the process runs (a child that exited stays a zombie until reaped).
pub fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(_, state)| state != 'Z' && state != 'X')
}

pub fn signal(pid: i32, sig: i32) {
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Runs a command to completion with a time limit; on overrun kills it (it is our child).
pub fn run_bounded(command: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s.code(), out, err),
        None => {
            panic!("{command:?} did not finish within {timeout:?}\nstdout:\n{out}\nstderr:\n{err}")
        }
    }
}

// ---------------------------------------------------------------------------------------
// Daemons on the fault cluster.

/// Replication factor for the application's topics: 3 on the 3-node cluster.
pub fn replication_factor() -> i32 {
    if bootstrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .count()
        >= 3
    {
        3
    } else {
        1
    }
}

/// A daemon with the suite's settings (replicated topics on the 3-node cluster).
pub fn daemon(app: &App, instance: &str) -> DaemonBuilder {
    app.daemon(instance).set(&format!(
        "topics.replication_factor={}",
        replication_factor()
    ))
}

/// A daemon started with a fault hook armed (`HELLO_STREAMS_FAULT`), from the binary
/// scripts/faults set aside right after building it with `--features fault-hooks`
/// (`FAULTS_HOOKED_BIN`): another engineer's plain `cargo build` or `cargo test` replaces
/// `target/release/hello-streams` with a build without the hooks. Same flags as
/// `common::DaemonBuilder`; killed (by its pid) when dropped.
pub struct Hooked {
    child: std::process::Child,
    pub http_port: u16,
    pub log_path: PathBuf,
}

/// `hello-streams run` for `app` as `instance` on the cluster under test, with the app's
/// topics; callers add addresses, extra settings and where the output goes.
pub fn daemon_command(bin: &str, app: &App, instance: &str, state_dir: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .current_dir(&app.state_root)
        .arg("run")
        .args([
            "--bootstrap-servers",
            &bootstrap(),
            "--application-id",
            &app.id,
        ])
        .args(["--instance-id", instance])
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("RUST_LOG");
    for set in [
        format!("topics.input={}", app.input),
        format!("topics.output={}", app.output),
        format!("topics.dlq={}", app.dlq),
        format!("topics.windows={}", app.windows),
        format!("topics.partitions={}", app.partitions),
        format!("topics.replication_factor={}", replication_factor()),
    ] {
        command.arg("--set").arg(set);
    }
    command
}

pub fn start_hooked(app: &App, instance: &str, fault: &str) -> Hooked {
    start_hooked_with(app, instance, fault, &[])
}

/// [`start_hooked`] with extra `--set field=value` settings (applied last).
pub fn start_hooked_with(app: &App, instance: &str, fault: &str, sets: &[&str]) -> Hooked {
    let bin = std::env::var("FAULTS_HOOKED_BIN").unwrap_or_else(|_| BIN.to_owned());
    let http_port = free_port();
    let resp_port = free_port();
    let log_path = app
        .state_root
        .join(format!("{instance}-{}-hooked.log", unique("run")));
    let log = std::fs::File::create(&log_path).expect("daemon log file");
    let mut command = daemon_command(&bin, app, instance, &app.state_dir(instance));
    command
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--resp-addr", &format!("127.0.0.1:{resp_port}")])
        .args(["--set", "kafka.session_timeout_ms=6000"])
        .args(["--set", "log.filter=info"]);
    for set in sets {
        command.arg("--set").arg(set);
    }
    command
        .env("HELLO_STREAMS_FAULT", fault)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    Hooked {
        child,
        http_port,
        log_path,
    }
}

impl Hooked {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A metric's value, NaN if the daemon does not answer.
pub fn metric_or_nan(d: &Daemon, name: &str) -> f64 {
    metric_at(d.http_port, name)
}

/// [`metric_or_nan`] for the instance whose HTTP API listens on `port`.
pub fn metric_at(port: u16, name: &str) -> f64 {
    http_get(port, "/metrics")
        .ok()
        .and_then(|(_, body)| metric_sum(&body, name))
        .unwrap_or(f64::NAN)
}

/// What a hooked instance has done so far, for failure messages: partitions, records
/// processed, commits, aborts.
pub fn progress_at(port: u16) -> String {
    format!(
        "owns {:?}, {} processed, {} commits (mean {} s, max {} s), {} aborts",
        owned_at(port),
        metric_at(port, "hello_streams_process_total"),
        metric_at(port, "hello_streams_commit_total"),
        metric_at(port, "hello_streams_commit_latency_avg_seconds"),
        metric_at(port, "hello_streams_commit_latency_max_seconds"),
        metric_at(port, "hello_streams_abort_total")
    )
}

/// The first line of a daemon's log after byte `from` that shows it found itself fenced (its
/// generation or producer epoch stale, whatever it had open aborted), waiting up to
/// `timeout`; else the log after `from`.
pub fn fenced_evidence(log: &Path, from: usize, timeout: Duration) -> Result<String, String> {
    let markers = [
        "lost: true",
        "lost=true",
        "commit failed",
        "fenced",
        "Fenced",
    ];
    let deadline = Instant::now() + timeout;
    loop {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let after = plain(&log[from.min(log.len())..]);
        if let Some(line) = after
            .lines()
            .find(|l| markers.iter().any(|m| l.contains(m)))
        {
            return Ok(line.to_owned());
        }
        if Instant::now() > deadline {
            return Err(after);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Partitions an instance serves (active or restoring), from `/v1/status`.
pub fn owned(d: &Daemon) -> Option<Vec<(i32, String)>> {
    owned_at(d.http_port)
}

/// [`owned`] for the instance whose HTTP API listens on `port`.
pub fn owned_at(port: u16) -> Option<Vec<(i32, String)>> {
    let (status, body) = http_get(port, "/v1/status").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        v["partitions"]
            .as_array()?
            .iter()
            .map(|p| {
                (
                    p["partition"].as_i64().unwrap_or(-1) as i32,
                    p["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
    )
}

/// Waits until `cond` holds; panics with `what` after the timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the instances together serve every partition exactly once, all active.
pub fn wait_partitions_settled(daemons: &[&Daemon], partitions: i32, timeout: Duration) {
    wait_until("partitions settled over the instances", timeout, || {
        partitions_settled(daemons, partitions)
    });
}

/// Whether the instances together serve every partition exactly once, all active, and all
/// are ready.
pub fn partitions_settled(daemons: &[&Daemon], partitions: i32) -> bool {
    let mut seen = Vec::new();
    for d in daemons {
        let Some(owned) = owned(d) else { return false };
        if owned.iter().any(|(_, state)| state != "active") {
            return false;
        }
        seen.extend(owned.into_iter().map(|(p, _)| p));
    }
    seen.sort_unstable();
    seen == (0..partitions).collect::<Vec<_>>()
        && daemons.iter().all(|d| {
            http_get(d.http_port, "/readyz")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        })
}

/// Input partitions whose committed group offset is not yet the input's end:
/// (partition, committed, end). Empty once every input record is committed.
pub fn uncommitted_input(app: &App) -> Vec<(i32, Option<i64>, i64)> {
    let c = client("read_uncommitted");
    group_committed_offsets(app)
        .into_iter()
        .filter_map(|(p, committed)| {
            let (_, end) = c
                .fetch_watermarks(&app.input, p, Duration::from_secs(30))
                .expect("input end");
            (committed != Some(end)).then_some((p, committed, end))
        })
        .collect()
}

/// What every thread of one of our processes is doing: `gdb -batch` backtraces if gdb is
/// installed (bounded), else each thread's name, wait channel and state from /proc.
pub fn thread_dump(pid: i32) -> String {
    if Command::new("gdb").arg("--version").output().is_ok() {
        let mut gdb = Command::new("gdb");
        gdb.args([
            "-batch",
            "-ex",
            "thread apply all bt",
            "-p",
            &pid.to_string(),
        ]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_bounded(&mut gdb, Duration::from_secs(60))
        }));
        if let Ok((_, out, err)) = result {
            let frames: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with('#') || l.starts_with("Thread "))
                .collect();
            if !frames.is_empty() {
                return frames.join("\n");
            }
            return format!("gdb gave no backtrace:\n{out}\n{err}");
        }
    }
    let mut dump = String::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| {
        d.filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect::<Vec<_>>()
    });
    for task in tasks.unwrap_or_default() {
        let read = |f: &str| {
            std::fs::read_to_string(task.join(f))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        dump.push_str(&format!(
            "{} {} wchan={} stat={}\n",
            task.display(),
            read("comm"),
            read("wchan"),
            read("stat")
        ));
    }
    dump
}

/// The daemon's log, for failure messages and bug reports.
pub fn log_tail(d: &Daemon, lines: usize) -> String {
    tail(&d.log(), lines)
}

pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Feeding load from a thread.

pub type Raw = (Option<Vec<u8>>, Option<Vec<u8>>);

pub fn raw(events: &[(String, String)]) -> Vec<Raw> {
    events
        .iter()
        .map(|(k, v)| (Some(k.as_bytes().to_vec()), Some(v.as_bytes().to_vec())))
        .collect()
}

/// Produces `records` in order, `chunk` at a time with `pause` in between, on a thread; the
/// thread returns once all are acknowledged (waiting out broker outages, up to 4 minutes).
pub fn feed(topic: &str, records: Vec<Raw>, chunk: usize, pause: Duration) -> JoinHandle<usize> {
    let topic = topic.to_owned();
    std::thread::Builder::new()
        .name("feeder".into())
        .spawn(move || {
            let producer = producer();
            for (i, slice) in records.chunks(chunk.max(1)).enumerate() {
                if i > 0 {
                    std::thread::sleep(pause);
                }
                for (key, value) in slice {
                    send(&producer, &topic, key.as_deref(), value.as_deref());
                }
            }
            producer
                .flush(Duration::from_secs(240))
                .expect("feeder: every record acknowledged");
            records.len()
        })
        .expect("feeder thread")
}

pub fn join_feeder(feeder: JoinHandle<usize>) -> usize {
    feeder.join().expect("feeder thread panicked")
}

// ---------------------------------------------------------------------------------------
// Kafka-side checks.

fn client(isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("faults-check"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("check consumer")
}

pub fn partition_count(topic: &str) -> i32 {
    let c = client("read_uncommitted");
    let metadata = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    metadata.topics()[0].partitions().len() as i32
}

/// Whether a topic exists (with partitions) on the cluster.
pub fn topic_exists(topic: &str) -> bool {
    let c = client("read_uncommitted");
    let metadata = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    metadata
        .topics()
        .first()
        .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty())
}

/// Sum over partitions of (high watermark - low watermark) as a read_uncommitted client sees
/// it: records, transaction markers and aborted records that are still in the log.
pub fn log_extent(topic: &str) -> i64 {
    let c = client("read_uncommitted");
    (0..partition_count(topic))
        .map(|p| {
            let (low, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .expect("watermarks");
            high - low
        })
        .sum()
}

/// Partitions of `topic` with a transaction open right now: (partition, last stable
/// offset, high watermark) where the two differ.
pub fn open_transactions(topic: &str) -> Vec<(i32, i64, i64)> {
    let committed = client("read_committed");
    let uncommitted = client("read_uncommitted");
    (0..partition_count(topic))
        .filter_map(|p| {
            let (lso, hw) = ends(&committed, &uncommitted, topic, p);
            (lso != hw).then_some((p, lso, hw))
        })
        .collect()
}

/// (last stable offset, high watermark) of a partition, from a read_committed and a
/// read_uncommitted client.
fn ends(committed: &BaseConsumer, uncommitted: &BaseConsumer, topic: &str, p: i32) -> (i64, i64) {
    let (_, lso) = committed
        .fetch_watermarks(topic, p, Duration::from_secs(30))
        .expect("read_committed end");
    let (_, hw) = uncommitted
        .fetch_watermarks(topic, p, Duration::from_secs(30))
        .expect("read_uncommitted end");
    (lso, hw)
}

/// No transaction left open: per partition, the end a read_committed client sees (the last
/// stable offset; librdkafka lists offsets with the client's isolation level) equals the end
/// a read_uncommitted client sees (the high watermark). Waits up to `timeout` for
/// transactions of dead instances to time out. Returns the partitions checked.
pub fn assert_no_open_transactions(topics: &[&str], timeout: Duration) -> usize {
    let committed = client("read_committed");
    let uncommitted = client("read_uncommitted");
    let deadline = Instant::now() + timeout;
    let mut checked = 0;
    for topic in topics {
        let partitions = partition_count(topic);
        for p in 0..partitions {
            loop {
                let (lso, hw) = ends(&committed, &uncommitted, topic, p);
                if lso == hw {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "transaction left open on {topic} [{p}]: read_committed end (LSO) {lso} \
                     != read_uncommitted end (high watermark) {hw} after {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            checked += 1;
        }
    }
    // And a read_committed reader reaches end-of-partition everywhere, in bounded time
    // (read_topic asserts its own 60 s deadline).
    for topic in topics {
        let _ = read_topic(topic, "read_committed");
    }
    checked
}

/// (source partition, source offset) of every committed dead letter but the late records,
/// which `verify_windows` checks against the window model.
pub fn dead_letter_sources(app: &App) -> Vec<(i64, i64)> {
    read_topic(&app.dlq, "read_committed")
        .iter()
        .filter(|r| r.headers.get("error.kind").map(String::as_str) != Some("late"))
        .map(|r| {
            let get = |h: &str| -> i64 {
                r.headers
                    .get(h)
                    .unwrap_or_else(|| panic!("dead letter without {h}: {:?}", r.headers))
                    .parse()
                    .unwrap_or_else(|_| panic!("{h} is not a number: {:?}", r.headers))
            };
            assert_eq!(
                r.headers.get("source.topic").map(String::as_str),
                Some(app.input.as_str()),
                "dead letter source.topic"
            );
            (get("source.partition"), get("source.offset"))
        })
        .collect()
}

/// Where the injected poison records landed in the input (read back from the input topic
/// and recognised by content).
pub fn poison_positions(app: &App, poison: &[Raw]) -> Vec<(i64, i64)> {
    let poison: HashSet<&Raw> = poison.iter().collect();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("faults-input"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("input reader");
    let partitions = partition_count(&app.input);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&app.input, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut pending: HashSet<i32> = (0..partitions).collect();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "reading the input timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading the input: {e}"),
            Some(Ok(m)) => {
                use rdkafka::message::Message;
                let record: Raw = (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec));
                if poison.contains(&record) {
                    found.push((m.partition() as i64, m.offset()));
                }
            }
        }
    }
    found
}

/// The dead-letter topic holds exactly the injected poison: each once, nothing else.
/// Returns the number of dead letters checked.
pub fn assert_dead_letters_exactly(app: &App, poison: &[Raw]) -> usize {
    let mut got = dead_letter_sources(app);
    let mut counts: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    for s in &got {
        *counts.entry(*s).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dupes.is_empty(),
        "dead letters written more than once: {dupes:?}"
    );
    let mut want = if poison.is_empty() {
        Vec::new()
    } else {
        poison_positions(app, poison)
    };
    assert_eq!(
        want.len(),
        poison.len(),
        "every injected poison record is in the input once"
    );
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "dead letters are exactly the injected poison");
    got.len()
}

/// Committed offsets of the application's consumer group on the input (None: no offset).
pub fn group_committed_offsets(app: &App) -> Vec<(i32, Option<i64>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", &app.id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("group reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..app.partitions {
        tpl.add_partition(&app.input, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
            )
        })
        .collect()
}

/// Creates topics with the admin API (the input of a case that must not start a daemon).
pub fn create_topic(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let rf = replication_factor();
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(rf));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    if rf > 1 {
        topic = topic.set("min.insync.replicas", "2");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&topic], &options))
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, code)| panic!("create topic {t}: {code}"));
    }
    wait_until("created topic visible", Duration::from_secs(30), || {
        topic_exists(name) && partition_count(name) == partitions
    });
}

/// The whole check every case ends with, on one remaining instance `port`:
/// the output record by record per key and the changelog's last values (common::verify), no
/// transaction left open on output, changelog and dead-letter topics, the query API agrees
/// (common::verify_queries), and the dead-letter topic holds exactly `poison`.
pub fn check_everything(
    case: &Case,
    app: &App,
    events: &[(String, String)],
    poison: &[Raw],
    port: u16,
) {
    check_everything_with(case, app, events, poison, port, Duplicates::Forbidden);
}

/// [`check_everything`], with duplicate output records allowed (at least once) or not;
/// returns the number of duplicates.
pub fn check_everything_with(
    case: &Case,
    app: &App,
    events: &[(String, String)],
    poison: &[Raw],
    port: u16,
    duplicates: Duplicates,
) -> usize {
    case.step(format!("verify: {} events expected", events.len()));
    let (verified, dupes) = verify_with(app, events, Duration::from_secs(180), duplicates);
    case.verified(verified);
    case.step(format!(
        "verified {verified} output records ({dupes} duplicates); checking transactions"
    ));
    let partitions = assert_no_open_transactions(
        &[
            &app.output,
            &app.changelog(),
            &app.dlq,
            &app.windows,
            &app.windows_changelog(),
        ],
        Duration::from_secs(45),
    );
    case.step(format!(
        "no open transaction on {partitions} partitions; queries"
    ));
    verify_queries(port, events);
    // At least once, a replayed record may meet a stream clock its first run had not moved
    // yet; the exact window checks are for exactly once.
    if duplicates == Duplicates::Forbidden {
        let windows = verify_windows(app, port);
        case.verified(windows);
        case.step(format!("{windows} windows exact"));
    }
    let dead = assert_dead_letters_exactly(app, poison);
    case.verified(dead);
    case.step(format!(
        "queries agree; {dead} dead letters, exactly the injected poison"
    ));
    dupes
}

// ---------------------------------------------------------------------------------------
// The 3-node cluster's fault commands (kafka/local-kafka --cluster three-node ...).

/// The separate cluster the suite runs on (scripts/faults exports it).
pub fn cluster() -> String {
    std::env::var("HELLO_STREAMS_KAFKA_CLUSTER").unwrap_or_else(|_| "three-node".into())
}

/// Runs `kafka/local-kafka --cluster <cluster> args...`, bounded.
pub fn local_kafka(args: &[&str]) -> String {
    assert_eq!(
        replication_factor(),
        3,
        "broker cases need the 3-node cluster (run scripts/faults; kafka: {})",
        bootstrap()
    );
    let tool = repo_root().join("kafka/local-kafka");
    let c = cluster();
    let mut command = Command::new(&tool);
    command.arg("--cluster").arg(&c).args(args);
    let (code, out, err) = run_bounded(&mut command, Duration::from_secs(180));
    assert_eq!(
        code,
        Some(0),
        "kafka/local-kafka --cluster {c} {args:?} failed:\n{out}\n{err}"
    );
    out
}

/// Brings every node of the cluster back when dropped, also when the case failed, so the
/// next case finds a whole cluster.
pub struct BrokersBack;

impl Drop for BrokersBack {
    fn drop(&mut self) {
        let tool = repo_root().join("kafka/local-kafka");
        let mut command = Command::new(&tool);
        command
            .arg("--cluster")
            .arg(cluster())
            .args(["start", "--keep-data"]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_bounded(&mut command, Duration::from_secs(180))
        }));
        match result {
            Ok((Some(0), _, _)) => {}
            Ok((code, out, err)) => {
                eprintln!("bringing the brokers back failed ({code:?}):\n{out}\n{err}")
            }
            Err(_) => eprintln!("bringing the brokers back timed out"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Files.

/// Files under `dir` whose names end with `suffix`, largest first.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .map(|e| (e.metadata().map(|m| m.len()).unwrap_or(0), e.path()))
                .collect()
        })
        .unwrap_or_default();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Sets or clears the immutable attribute (root cannot write into an immutable directory,
/// unlike one without write permission). False when the file system does not support it.
pub fn set_immutable(path: &Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
