//! Start-up against a broker that is not there: the daemon says what it waits for at once,
//! keeps saying it at a steady cadence, answers `/healthz` meanwhile, and gives up within its
//! start timeout with a non-zero exit. No broker needed (nothing listens on port 1).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{free_port, http_get, https_get, BIN};

struct Starting {
    child: Child,
    lines: mpsc::Receiver<(Duration, String)>,
    started: Instant,
    http: u16,
    seen: Vec<String>,
}

fn start_unreachable(dir: &Path, extra: &[&str]) -> Starting {
    let http = free_port();
    let resp = free_port();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["run", "--bootstrap-servers", "127.0.0.1:1", "--state-dir"])
        .arg(dir.join("state"))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--resp-addr")
        .arg(format!("127.0.0.1:{resp}"))
        .args(["--set", "log.filter=info"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hello-streams");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send((started.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    Starting {
        child,
        lines,
        started,
        http,
        seen: Vec::new(),
    }
}

impl Starting {
    /// The first line containing `needle`, and when it came.
    fn wait_for_line(&mut self, needle: &str, within: Duration) -> (Duration, String) {
        let deadline = self.started + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return (at, line);
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {within:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the exit; returns its code, when it came, and all of stderr.
    fn wait_exit(mut self, within: Duration) -> (Option<i32>, Duration, String) {
        let deadline = self.started + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let at = self.started.elapsed();
                while let Ok((_, line)) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return (status.code(), at, self.seen.join("\n"));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {within:?}; stderr:\n{}",
                    self.seen.join("\n")
                );
            }
            while let Ok((_, line)) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn an_unreachable_broker_is_named_at_once_retried_visibly_and_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start_unreachable(dir.path(), &["--set", "kafka.start_timeout_ms=7000"]);

    let (at, first) = daemon.wait_for_line("waiting for kafka", Duration::from_secs(4));
    assert!(
        at < Duration::from_secs(3),
        "first report after {at:?}: {first}"
    );
    assert!(
        first.contains("127.0.0.1:1") && first.contains("Connection refused"),
        "names the address and the error: {first}"
    );
    assert!(first.contains("attempt=1"), "{first}");

    let (status, body) = http_get(daemon.http, "/healthz").expect("healthz answers while waiting");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = http_get(daemon.http, "/readyz").expect("readyz answers while waiting");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("waiting for kafka") && body.contains("127.0.0.1:1"),
        "{body}"
    );

    let (at, second) = daemon.wait_for_line("attempt=2", Duration::from_secs(6));
    assert!(
        at < Duration::from_secs(5),
        "second attempt after {at:?}: {second}"
    );

    let (code, at, stderr) = daemon.wait_exit(Duration::from_secs(20));
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}:\n{stderr}"
    );
    assert!(
        at >= Duration::from_secs(6) && at < Duration::from_secs(12),
        "gave up after {at:?}, configured 7 s:\n{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error:")
            && last.contains("127.0.0.1:1")
            && last.contains("kafka.start_timeout_ms"),
        "the final line says what failed and what to change: {last}"
    );
    assert!(
        stderr.contains("file=none (built-in defaults)"),
        "names the configuration used:\n{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour escapes when stderr is not a terminal:\n{stderr}"
    );
}

#[test]
fn json_logs_are_one_object_a_line_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    // A config/default.toml in the current directory is read, and the log says so.
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/default.toml"),
        "[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let daemon = start_unreachable(dir.path(), &["--set", "kafka.start_timeout_ms=2000"]);
    let (code, _, stderr) = daemon.wait_exit(Duration::from_secs(15));
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit {code:?}:\n{stderr}"
    );
    let mut events = Vec::new();
    for line in stderr.lines().filter(|l| !l.starts_with("error:")) {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{stderr}"));
        events.push(event);
    }
    let configuration = events
        .iter()
        .find(|e| e["message"] == "configuration")
        .unwrap_or_else(|| panic!("no configuration event:\n{stderr}"));
    assert!(
        configuration["file"]
            .as_str()
            .is_some_and(|f| f.contains("config/default.toml (found in the current directory")),
        "{configuration}"
    );
    let waiting = events
        .iter()
        .find(|e| e["message"] == "waiting for kafka")
        .unwrap_or_else(|| panic!("no waiting event:\n{stderr}"));
    assert_eq!(waiting["level"], "WARN", "{waiting}");
    assert_eq!(waiting["bootstrap_servers"], "127.0.0.1:1", "{waiting}");
    assert_eq!(waiting["attempt"], 1, "{waiting}");
}

#[test]
fn with_query_tls_the_start_up_answers_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::tls::TestCerts::generate(&dir.path().join("certs"));
    let fields = [
        ("cert_file", &certs.cert),
        ("key_file", &certs.key),
        ("ca_file", &certs.ca),
    ];
    let sets: Vec<String> = fields
        .iter()
        .map(|(field, path)| format!("query.tls.{field}={}", path.display()))
        .collect();
    let mut args = vec!["--set", "kafka.start_timeout_ms=20000"];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    let mut daemon = start_unreachable(dir.path(), &args);
    daemon.wait_for_line("waiting for kafka", Duration::from_secs(4));

    let (status, body) =
        https_get(daemon.http, "/healthz", &certs.ca, None).expect("healthz answers over TLS");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) =
        https_get(daemon.http, "/readyz", &certs.ca, None).expect("readyz over TLS");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("waiting for kafka"), "{body}");
    // A plain-HTTP client gets no answer it could mistake for the API.
    let plain = http_get(daemon.http, "/healthz");
    assert!(
        !matches!(&plain, Ok((200, _))),
        "plain HTTP on the TLS port: {plain:?}"
    );
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
}
