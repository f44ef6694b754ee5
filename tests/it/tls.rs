//! TLS on both query ports of a two-instance group, read through one instance only, so every
//! read of the other instance's keys is forwarded over TLS too: curl over HTTPS, redis-py
//! with `ssl=True` at its defaults (RESP3) and at `protocol=2`, with `AUTH`, and
//! `redis-cli --tls`. The certificates are made at test time with the openssl CLI: a CA and
//! a certificate it signed for 127.0.0.1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use crate::redis_clients::{group_with, load, redis_py};

/// A CA and a server certificate it signed (`cert`, `key`), as PEM files.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCerts {
    /// Made with `openssl` in `dir`: EC P-256 keys, valid two days, the certificate naming
    /// 127.0.0.1 and localhost and good for server and client authentication.
    pub fn generate(dir: &Path) -> TestCerts {
        std::fs::create_dir_all(dir).expect("certificate dir");
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec[..],
                &[
                    "-keyout",
                    &path("ca.key"),
                    "-out",
                    &path("ca.pem"),
                    "-days",
                    "2",
                    "-subj",
                    "/CN=hello-streams test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec[..],
                &[
                    "-keyout",
                    &path("key.pem"),
                    "-out",
                    &path("cert.csr"),
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            path("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("extensions file");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path("cert.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-out",
            &path("cert.pem"),
            "-days",
            "2",
            "-extfile",
            &path("ext.cnf"),
        ]);
        TestCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `redis-cli --tls` running `commands` in one session (on stdin; one reply a line).
pub fn redis_cli_tls(
    port: u16,
    ca: &Path,
    password: Option<&str>,
    commands: &[String],
) -> Vec<String> {
    let mut command = Command::new("redis-cli");
    command
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(password) = password {
        command.args(["--user", "default", "--pass", password, "--no-auth-warning"]);
    }
    run_with_stdin(command, commands)
}

/// Runs redis-cli with `commands` on its stdin; its output lines.
fn run_with_stdin(mut command: Command, commands: &[String]) -> Vec<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli (apt-get install redis-tools)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = commands.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("redis-cli ran");
    writer.join().unwrap().expect("commands written");
    assert!(
        output.status.success(),
        "redis-cli --tls failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `GET` for every key written in one go over TLS before any reply is read, as pipelining
/// clients do; the replies' values (`$-1` for none), in order.
fn pipelined_gets(port: u16, ca: &Path, password: &str, keys: &[&String]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let mut stream = tls_connect(port, ca).expect("tls connect");
    let mut batch = format!("AUTH {password}\r\n");
    for key in keys {
        batch.push_str(&format!("GET {key}\r\n"));
    }
    stream
        .write_all(batch.as_bytes())
        .expect("pipeline written");
    stream.flush().expect("pipeline flushed");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut next = |reader: &mut BufReader<_>| {
        line.clear();
        reader.read_line(&mut line).expect("a reply line");
        line.trim_end().to_owned()
    };
    assert_eq!(next(&mut reader), "+OK");
    let mut values = Vec::with_capacity(keys.len());
    for _ in keys {
        let head = next(&mut reader);
        values.push(if head.starts_with('$') && head != "$-1" {
            next(&mut reader)
        } else {
            head
        });
    }
    values
}

/// `curl --cacert` fetching every key's state from one instance in one run (one
/// connection, kept alive); each answer's `helloCount`, in order.
fn curl_counts(port: u16, ca: &Path, token: &str, keys: &[&String], dir: &Path) -> Vec<String> {
    let urls = dir.join("urls.curl");
    let mut list = String::new();
    for key in keys {
        list.push_str(&format!(
            "url = \"https://127.0.0.1:{port}/v1/state/{key}\"\n"
        ));
    }
    std::fs::write(&urls, list).expect("curl url list");
    let output = Command::new("curl")
        .arg("--cacert")
        .arg(ca)
        .args(["--silent", "--show-error", "--max-time", "300"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--write-out", "\\n", "--config"])
        .arg(&urls)
        .output()
        .expect("curl");
    assert!(
        output.status.success(),
        "curl --cacert failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let state: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            state["helloCount"].to_string()
        })
        .collect()
}

/// Reports and asserts that every answer is the one wanted.
fn all_right(what: &str, got: &[String], want: &[String]) {
    let right = got
        .iter()
        .zip(want)
        .filter(|(got, want)| got == want)
        .count();
    eprintln!("{what}: {right} of {} right", want.len());
    let wrong: Vec<_> = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g != w)
        .take(5)
        .collect();
    assert_eq!(right, want.len(), "{what}: (got, want) {wrong:?}");
}

#[test]
fn curl_redis_py_and_redis_cli_read_every_key_over_tls_through_one_instance_of_two() {
    let app = App::new("tls", 6);
    let certs = TestCerts::generate(&app.state_root.join("certs"));
    let (password, token) = ("tls-group-password", "tls-http-token");
    let (a, b) = group_with(&app, |builder| {
        builder
            .tls(&certs.cert, &certs.key, &certs.ca)
            .env("HELLO_STREAMS__QUERY__RESP_PASSWORD", password)
            .env(
                "HELLO_STREAMS__QUERY__RESP_USERS__READER",
                "reader-password",
            )
            .env("HELLO_STREAMS__QUERY__HTTP_TOKEN", token)
    });
    let (expected, path) = load(&app);
    let owned = |daemon: &Daemon| {
        let (_, body) = https_get(daemon.http_port, "/v1/status", &certs.ca, Some(token))
            .expect("https status");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        status["partitions"].as_array().map_or(0, Vec::len)
    };
    let (on_a, on_b) = (owned(&a), owned(&b));
    assert!(
        on_a > 0 && on_b > 0,
        "both instances own partitions: {on_a} / {on_b}"
    );

    redis_py(
        a.resp_port,
        0,
        &path,
        Some(("default", password)),
        Some(&certs.ca),
    );
    redis_py(
        a.resp_port,
        2,
        &path,
        Some(("reader", "reader-password")),
        Some(&certs.ca),
    );

    let keys: Vec<&String> = expected.keys().collect();
    let want: Vec<String> = expected.values().map(|e| e.count.to_string()).collect();
    let counts = curl_counts(a.http_port, &certs.ca, token, &keys, &app.state_root);
    all_right("curl --cacert through one instance", &counts, &want);

    let sample: Vec<&String> = keys.iter().copied().step_by(10).collect();
    let commands: Vec<String> = sample.iter().map(|key| format!("GET {key}")).collect();
    let replies = redis_cli_tls(a.resp_port, &certs.ca, Some(password), &commands);
    let sample_want: Vec<String> = want.iter().step_by(10).cloned().collect();
    all_right(
        "redis-cli --tls through one instance",
        &replies,
        &sample_want,
    );

    let pipelined = pipelined_gets(a.resp_port, &certs.ca, password, &keys);
    all_right("GETs pipelined over one TLS connection", &pipelined, &want);

    // Plain text on a TLS port gets no answer, only a closed connection.
    let plain = http_get(a.http_port, "/readyz").map(|(status, _)| status);
    assert!(
        !matches!(plain, Ok(200)),
        "plain http on the tls port: {plain:?}"
    );
    let ready = https_get(b.http_port, "/readyz", &certs.ca, None).expect("https");
    assert_eq!(ready.0, 200);
    drop(b);
}

#[test]
fn with_client_certificates_required_only_clients_presenting_one_are_served() {
    let app = App::new("mtls", 4);
    let certs = TestCerts::generate(&app.state_root.join("certs"));
    let (a, b) = group_with(&app, |builder| {
        builder
            .tls(&certs.cert, &certs.key, &certs.ca)
            .client_certificates(&certs.ca, &certs.cert, &certs.key)
    });
    let events: Vec<(String, String)> = (0..200)
        .map(|i| (format!("mtls-{i}"), "Hello".to_owned()))
        .collect();
    produce_events(&app.input, &events);
    verify(&app, &events, Duration::from_secs(120));
    let identity = Some((certs.cert.as_path(), certs.key.as_path()));
    // Through one instance: the other's keys are forwarded, presenting its certificate.
    let mut right = 0;
    for (key, _) in &events {
        let path = format!("/v1/state/{key}");
        let (status, body) = https_get_as(a.http_port, &path, &certs.ca, identity, None)
            .expect("https with a client certificate");
        let state: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        right += usize::from(status == 200 && state["helloCount"] == 1);
    }
    eprintln!(
        "mtls: {right} of {} right through one instance",
        events.len()
    );
    assert_eq!(right, events.len());
    let commands: Vec<String> = events.iter().map(|(key, _)| format!("GET {key}")).collect();
    let mut redis_cli = Command::new("redis-cli");
    redis_cli
        .args(["--tls", "--cacert"])
        .arg(&certs.ca)
        .arg("--cert")
        .arg(&certs.cert)
        .arg("--key")
        .arg(&certs.key)
        .args(["-h", "127.0.0.1", "-p", &b.resp_port.to_string()]);
    let replies = run_with_stdin(redis_cli, &commands);
    let ones = vec!["1".to_owned(); events.len()];
    all_right(
        "mtls: redis-cli --tls --cert through the other instance",
        &replies,
        &ones,
    );

    // Without a certificate the handshake is refused.
    let bare = https_get(a.http_port, "/readyz", &certs.ca, None);
    assert!(
        bare.is_err() || bare.as_ref().is_ok_and(|(s, _)| *s != 200),
        "{bare:?}"
    );
    let curl = Command::new("curl")
        .arg("--cacert")
        .arg(&certs.ca)
        .args(["--silent", "--max-time", "10"])
        .arg(format!("https://127.0.0.1:{}/readyz", a.http_port))
        .output()
        .expect("curl");
    assert!(
        !curl.status.success(),
        "curl without a client certificate was served"
    );
}
