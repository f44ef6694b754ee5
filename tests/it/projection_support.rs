//! What the projection tests share: the real PostgreSQL and Redis that `scripts/test`
//! starts (scripts/test-servers), a database per test, the projection process, and the
//! rows and hashes read back with the servers' own clients.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bootstrap, unique, App, BIN};

fn server_url(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{variable} is not set: the projection tests need a real server. Start them with \
             `scripts/test-servers start` and `eval \"$(scripts/test-servers env)\"` \
             (scripts/test does both)"
        ),
    }
}

/// A database of its own for one test, on the test PostgreSQL.
pub fn fresh_database() -> String {
    let base = server_url("HELLO_STREAMS_TEST_POSTGRES_URL");
    let name = unique("hs").replace('-', "_");
    psql(&base, &format!("CREATE DATABASE {name}"));
    // libpq and tokio-postgres both take the last value of a repeated keyword.
    format!("{base} dbname={name}")
}

pub fn redis_url() -> String {
    server_url("HELLO_STREAMS_TEST_REDIS_URL")
}

/// Runs SQL through psql; returns its unaligned, tab-separated output.
pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("psql output is UTF-8")
}

/// One key's values as a target holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub count: u64,
    pub total: u64,
    pub mood: String,
    pub revision: u64,
}

/// `durable_state` by key (entity type `HelloState`).
pub fn durable_state(url: &str) -> HashMap<String, Row> {
    // The projection creates the tables (--create-tables) after it starts: until then there
    // are no rows, not an error.
    if psql(url, "SELECT to_regclass('durable_state') IS NOT NULL").trim() != "t" {
        return HashMap::new();
    }
    let text = psql(
        url,
        "SELECT persistence_id, revision, convert_from(state_payload, 'UTF8') FROM durable_state",
    );
    let mut rows = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.split('\t');
        let id = fields.next().unwrap();
        let revision: u64 = fields.next().unwrap().parse().unwrap();
        let payload: serde_json::Value = serde_json::from_str(fields.next().unwrap()).unwrap();
        let key = id
            .strip_prefix("HelloState|")
            .expect("persistence id prefix");
        let row = Row {
            count: payload["helloCount"].as_u64().unwrap(),
            total: payload["helloTotalCount"].as_u64().unwrap(),
            mood: payload["mood"].as_str().unwrap().to_owned(),
            revision,
        };
        assert!(
            rows.insert(key.to_owned(), row).is_none(),
            "two durable_state rows for {key}"
        );
    }
    rows
}

/// The hashes of `keys` under `prefix`; keys without a hash are left out.
pub fn redis_hashes<'a>(
    prefix: &str,
    keys: impl IntoIterator<Item = &'a String>,
) -> HashMap<String, Row> {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut connection = client.get_connection().expect("connect to the test redis");
    let mut out = HashMap::new();
    for key in keys {
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{prefix}{key}"))
            .query(&mut connection)
            .expect("HGETALL");
        if hash.is_empty() {
            continue;
        }
        let number = |f: &str| hash[f].parse::<u64>().unwrap();
        out.insert(
            key.clone(),
            Row {
                count: number("helloCount"),
                total: number("helloTotalCount"),
                mood: hash["mood"].clone(),
                revision: number("revision"),
            },
        );
    }
    out
}

/// What every key must hold after `events`: the independent model's counts and mood, and
/// one revision per event of the key.
pub fn expected_rows(events: &[(String, String)]) -> HashMap<String, Row> {
    let (state, _) = crate::common::model(events);
    let mut revisions: HashMap<&str, u64> = HashMap::new();
    for (key, _) in events {
        *revisions.entry(key).or_default() += 1;
    }
    state
        .into_iter()
        .map(|(key, s)| {
            let revision = revisions[key.as_str()];
            let row = Row {
                count: s.count,
                total: s.total,
                mood: if s.angry { "ANGRY" } else { "HAPPY" }.to_owned(),
                revision,
            };
            (key, row)
        })
        .collect()
}

/// Polls `read` until it equals `want` or the timeout passes; then asserts equality with
/// the first differing key named.
pub fn await_rows(
    what: &str,
    want: &HashMap<String, Row>,
    timeout: Duration,
    mut read: impl FnMut() -> HashMap<String, Row>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = read();
        if got == *want {
            return;
        }
        if Instant::now() > deadline {
            let mut keys: Vec<&String> = want.keys().chain(got.keys()).collect();
            keys.sort();
            keys.dedup();
            let wrong: Vec<&&String> = keys
                .iter()
                .filter(|k| want.get(**k) != got.get(**k))
                .collect();
            let first = wrong[0];
            panic!(
                "{what}: {} of {} keys differ; {first}: want {:?}, got {:?}",
                wrong.len(),
                want.len(),
                want.get(*first),
                got.get(*first)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A running `hello-streams projection ...`, killed (by its pid) when dropped.
pub struct Projection {
    child: Option<Child>,
    pub log_path: PathBuf,
}

/// Starts `hello-streams projection <args>` for the app's output topic.
pub fn start_projection(app: &App, group: &str, args: &[&str]) -> Projection {
    let log_path = app.state_root.join(format!("{}.log", unique("projection")));
    let log = std::fs::File::create(&log_path).expect("projection log");
    let child = Command::new(BIN)
        .current_dir(&app.state_root)
        .arg("projection")
        .args(args)
        .args(["--group", group])
        .args([
            "--bootstrap-servers",
            &bootstrap(),
            "--application-id",
            &app.id,
        ])
        .args(["--set", &format!("topics.input={}", app.input)])
        .args(["--set", &format!("topics.output={}", app.output)])
        .args(["--set", &format!("topics.dlq={}", app.dlq)])
        .args([
            "--set",
            "kafka.session_timeout_ms=6000",
            "--set",
            "log.filter=info",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn hello-streams projection");
    Projection {
        child: Some(child),
        log_path,
    }
}

impl Projection {
    pub fn log(&self) -> String {
        crate::common::plain(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("projection exited ({status}); log:\n{}", self.log());
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; asserts a clean exit within the timeout.
    pub fn terminate(&mut self) {
        let mut child = self.child.take().expect("projection is running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "projection exit {status}; log:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("projection ignored SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Projection {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `hello-streams projection verify` against an instance's state directory.
pub fn verify(app: &App, instance: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(BIN)
        .current_dir(&app.state_root)
        .args(["projection", "verify"])
        .args(args)
        .args(["--application-id", &app.id])
        .arg("--state-dir")
        .arg(app.state_dir(instance))
        .env_remove("RUST_LOG")
        .output()
        .expect("run projection verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A topic of the test's own, for records produced without a daemon.
pub fn create_topic(name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in
        futures::executor::block_on(admin.create_topics([&topic], &options)).expect("create topic")
    {
        result.unwrap_or_else(|(t, code)| panic!("create topic {t}: {code}"));
    }
}

/// Polls `done` every 200 ms; panics with `what` when the timeout passes first.
pub fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
