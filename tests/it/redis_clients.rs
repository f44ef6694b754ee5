//! Real Redis client libraries against a two-instance group, read through one instance only:
//! every key must come back right whichever instance owns it (the instance forwards), at
//! redis-py's defaults (RESP3) and at `protocol=2`, with and without `AUTH`.
//!
//! redis-py and ioredis (Node) must be installed (`scripts/install-test-clients`); without
//! them these tests fail.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const KEYS: usize = 10_000;

/// Two instances of one application, both ready, each owning some partitions.
fn group(app: &App, extra: &[&str], envs: &[(&str, &str)]) -> (Daemon, Daemon) {
    group_with(app, |mut builder| {
        for set in extra {
            builder = builder.set(set);
        }
        for (k, v) in envs {
            builder = builder.env(k, v);
        }
        builder
    })
}

/// [`group`] with each instance's builder set up by `configure`.
pub fn group_with(
    app: &App,
    configure: impl Fn(DaemonBuilder) -> DaemonBuilder,
) -> (Daemon, Daemon) {
    let start = |name: &str| configure(app.daemon(name)).start();
    let mut a = start("a");
    a.wait_ready(Duration::from_secs(60));
    let mut b = start("b");
    b.wait_ready(Duration::from_secs(90));
    // b being ready means the group gave it its partitions; a must have settled too.
    a.wait_ready(Duration::from_secs(90));
    (a, b)
}

fn owned(daemon: &Daemon) -> usize {
    let (_, body) = http_get_auth(daemon.http_port, "/v1/status", None);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    status["partitions"].as_array().map_or(0, Vec::len)
}

pub fn http_get_auth(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let (status, _, body) = http_get_with(port, path, token);
    (status, body)
}

/// Produces a workload over `KEYS` keys, waits for all of it, and writes what each key must
/// read as for the client scripts.
pub fn load(app: &App) -> (BTreeMap<String, Expected>, std::path::PathBuf) {
    // One hello per key first, so every one of the KEYS keys has state, then a mixed load.
    let mut events: Vec<(String, String)> = (0..KEYS)
        .map(|i| (format!("user-{i}"), "Hello".to_owned()))
        .collect();
    events.extend(workload(KEYS, KEYS, 16));
    produce_events(&app.input, &events);
    verify(app, &events, Duration::from_secs(120));
    let (expected, _) = model(&events);
    let expected: BTreeMap<String, Expected> = expected.into_iter().collect();
    let json: BTreeMap<&String, (u64, u64, &str)> = expected
        .iter()
        .map(|(k, e)| {
            (
                k,
                (e.count, e.total, if e.angry { "ANGRY" } else { "HAPPY" }),
            )
        })
        .collect();
    let path = app.state_root.join("expected.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    (expected, path)
}

/// redis-py reading every expected key; with `tls_ca`, over TLS (`ssl=True`) trusting it.
pub fn redis_py(
    port: u16,
    protocol: u8,
    expected: &std::path::Path,
    login: Option<(&str, &str)>,
    tls_ca: Option<&std::path::Path>,
) {
    let script = repo_root().join("tests/it/clients/redis_py_read.py");
    let mut command = Command::new("python3");
    if let Some(ca) = tls_ca {
        command.env("REDIS_TLS_CA", ca);
    }
    command
        .arg(&script)
        .arg(port.to_string())
        .arg(protocol.to_string())
        .arg(expected);
    if let Some((user, password)) = login {
        command.arg(user).arg(password);
    }
    let output = command
        .output()
        .expect("python3 (and redis-py: scripts/install-test-clients)");
    let report = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "redis-py protocol={protocol} login={} tls={}: {report}",
        login.is_some(),
        tls_ca.is_some()
    );
    let spoken = if protocol == 0 { 3 } else { protocol };
    assert!(
        report.contains(&format!("\"protocol\": {spoken}")),
        "redis-py spoke RESP{spoken}: {report}"
    );
    assert!(
        output.status.success(),
        "redis-py protocol={protocol} got answers wrong: {report}\n{stderr}"
    );
}

fn ioredis(port: u16, expected: &std::path::Path, password: Option<&str>) {
    let dir = repo_root().join("tests/it/clients");
    assert!(
        dir.join("node_modules/ioredis").exists(),
        "ioredis is not installed: run scripts/install-test-clients"
    );
    let mut command = Command::new("node");
    command
        .arg(dir.join("ioredis_read.js"))
        .arg(port.to_string())
        .arg(expected);
    if let Some(password) = password {
        command.arg(password);
    }
    let output = command.output().expect("node (apt-get install nodejs)");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("ioredis login={}: {report}", password.is_some());
    assert!(
        output.status.success(),
        "ioredis got answers wrong: {report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn redis_py_and_http_read_every_key_through_one_instance_of_two() {
    let app = App::new("clients", 6);
    let (a, b) = group(&app, &[], &[]);
    let (expected, path) = load(&app);
    let (on_a, on_b) = (owned(&a), owned(&b));
    assert!(
        on_a > 0 && on_b > 0,
        "both instances own partitions: {on_a} / {on_b}"
    );
    redis_py(a.resp_port, 0, &path, None, None);
    redis_py(a.resp_port, 2, &path, None, None);
    ioredis(a.resp_port, &path, None);
    // HTTP through the same instance: forwarded, no redirect to follow.
    let mut right = 0;
    for (key, want) in &expected {
        let (status, body) = http_get_auth(a.http_port, &format!("/v1/state/{key}"), None);
        let state: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && state["helloCount"] == want.count {
            right += 1;
        }
    }
    eprintln!(
        "http through one instance: {right} of {} right",
        expected.len()
    );
    assert_eq!(right, expected.len());
    drop(b);
}

#[test]
fn redis_py_with_auth_reads_every_key_through_one_instance_of_two() {
    let app = App::new("clients-auth", 6);
    let envs = [
        ("HELLO_STREAMS__QUERY__RESP_PASSWORD", "group-password"),
        (
            "HELLO_STREAMS__QUERY__RESP_USERS__READER",
            "reader-password",
        ),
    ];
    let (a, b) = group(&app, &[], &envs);
    let (_, path) = load(&app);
    assert!(owned(&a) > 0 && owned(&b) > 0);
    redis_py(
        a.resp_port,
        0,
        &path,
        Some(("default", "group-password")),
        None,
    );
    redis_py(
        a.resp_port,
        2,
        &path,
        Some(("reader", "reader-password")),
        None,
    );
    ioredis(b.resp_port, &path, Some("group-password"));
}
