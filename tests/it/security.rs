//! A secured cluster from `[kafka.security]` alone: the daemon reaches the broker only through
//! a SASL listener (and SASL over TLS), with no raw option anywhere, and every one of its
//! clients (group consumer, transactional producer, admin, restore and end-offset readers,
//! ownership announcer) must get through for the counts to come out exact. The test's own
//! producer and verifier use the plaintext listener.
//!
//! The listeners come from `kafka/local-kafka start --secure` (scripts/test starts it so);
//! `kafka/local-kafka env` exports where they are. Without them these tests fail and say so.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;

struct Secure {
    sasl: String,
    sasl_ssl: String,
    username: String,
    password_file: String,
    ca: String,
}

fn secure() -> Secure {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                "{name} is not set: these tests need the broker's SASL listeners; start it with \
                 `kafka/local-kafka start --secure` and `eval \"$(kafka/local-kafka env)\"` \
                 (scripts/test does both)"
            )
            })
    };
    Secure {
        sasl: var("KAFKA_SASL_BOOTSTRAP_SERVERS"),
        sasl_ssl: var("KAFKA_SASL_SSL_BOOTSTRAP_SERVERS"),
        username: var("KAFKA_SASL_USERNAME"),
        password_file: var("KAFKA_SASL_PASSWORD_FILE"),
        ca: var("KAFKA_SSL_CA_LOCATION"),
    }
}

fn write_config(app: &App, text: &str) -> PathBuf {
    let path = app.state_root.join("secure.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn exact_counts_through(app: &App, daemon: DaemonBuilder) {
    let mut daemon = daemon.start();
    daemon.wait_ready(Duration::from_secs(90));
    let events = workload(1_500, 30, 21);
    produce_events(&app.input, &events);
    let verified = verify(app, &events, Duration::from_secs(90));
    assert_eq!(verified, events.len(), "one output record per event");
    verify_queries(daemon.http_port, &events);
    assert_caught_up(&daemon, app.partitions);
    let log = daemon.log();
    assert!(
        !log.contains("Authentication failed") && !log.contains("SSL handshake failed"),
        "{log}"
    );
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean exit: {status}; log:\n{}",
        daemon.log()
    );
}

#[test]
fn sasl_plaintext_from_the_security_section_alone_gives_exact_counts() {
    let s = secure();
    let app = App::new("sasl", 2);
    let config = write_config(
        &app,
        &format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n\n[kafka.security]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"{}\"\nsasl_password_file = \"{}\"\n",
            s.sasl, s.username, s.password_file
        ),
    );
    exact_counts_through(&app, app.daemon("a").config_file(config));
}

#[test]
fn sasl_ssl_with_the_password_from_the_environment_gives_exact_counts() {
    let s = secure();
    let app = App::new("saslssl", 2);
    let password = std::fs::read_to_string(&s.password_file).expect("password file");
    let config = write_config(
        &app,
        &format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n\n[kafka.security]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"{}\"\nsasl_password_env = \"HS_TEST_KAFKA_PASSWORD\"\nssl_ca_location = \"{}\"\n",
            s.sasl_ssl, s.username, s.ca
        ),
    );
    exact_counts_through(
        &app,
        app.daemon("a")
            .config_file(config)
            .env("HS_TEST_KAFKA_PASSWORD", password.trim_end()),
    );
}

#[test]
fn a_wrong_password_stops_the_start_at_once_and_is_never_printed() {
    let s = secure();
    let app = App::new("badlogin", 1);
    let config = write_config(
        &app,
        &format!(
            "[kafka]\nbootstrap_servers = \"{}\"\n\n[kafka.security]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"{}\"\nsasl_password = \"not-the-password-42\"\n",
            s.sasl, s.username
        ),
    );
    let started = std::time::Instant::now();
    let mut daemon = app.daemon("a").config_file(config).start();
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "must fail: {}", daemon.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "at once, not after the start timeout: {:?}",
        started.elapsed()
    );
    let log = daemon.log();
    let last = log.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("refused the login") && last.contains("kafka.security.sasl_username"),
        "{last}"
    );
    assert!(!log.contains("not-the-password-42"), "{log}");
}

/// Once everything is processed, `/v1/status` and `/metrics` both report a lag of 0 records
/// for every partition: the lag is measured, not left null.
fn assert_caught_up(daemon: &Daemon, partitions: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status) = http_get(daemon.http_port, "/v1/status").expect("status");
        let (_, metrics) = http_get(daemon.http_port, "/metrics").expect("metrics");
        let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
        let lags: Vec<Option<i64>> = status["partitions"]
            .as_array()
            .map(|ps| ps.iter().map(|p| p["lag"].as_i64()).collect())
            .unwrap_or_default();
        let in_metrics = (0..partitions).all(|p| {
            metrics.contains(&format!(
                "hello_streams_records_lag{{partition=\"{p}\"}} 0\n"
            ))
        });
        if lags.len() == partitions as usize && lags.iter().all(|l| *l == Some(0)) && in_metrics {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lag not reported as 0: {status}\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
