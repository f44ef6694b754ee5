//! Hostile and careless clients against a real daemon: slowloris and half-open HTTP floods,
//! idle RESP floods, a pipeline that never reads its replies, malformed and oversized frames,
//! wrong passwords. Each asserts that others are still served, that the daemon's RSS stays
//! within a stated bound, and that SIGTERM still exits 0 in time.
//!
//! Sizes are small enough for CI; `scripts/hostile` runs the same tests at the sizes
//! (`HOSTILE_CONNECTIONS=1000`, `HOSTILE_PIPELINE_MB=100`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

/// SIGTERM must end the process within the query servers' shutdown bound (5 s by default)
/// plus the stream thread's final commit.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// A connection to the daemon from 127.0.0.2: a flood's local ports then never collide with
/// the 127.0.0.1 ports other tests' daemons are started on.
fn connect_aside(port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let aside: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    socket.bind(&aside.into()).expect("bind 127.0.0.2");
    let target: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket
        .connect(&target.into())
        .expect("connect to the daemon");
    socket.into()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One RESP command as an array; returns the first reply line (or what came before a close).
fn resp_line(port: u16, words: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("resp connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0; 1];
    while stream.read(&mut byte).unwrap_or(0) == 1 {
        reply.push(byte[0]);
        if reply.ends_with(b"\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&reply).trim_end().to_owned()
}

fn served(daemon: &Daemon) {
    let (status, _) = http_get(daemon.http_port, "/v1/state/nobody-at-all").expect("http");
    assert_eq!(status, 404, "a new HTTP client is served");
    assert_eq!(
        resp_line(daemon.resp_port, &["PING"]),
        "+PONG",
        "a new RESP client is served"
    );
}

fn stop_in_time(mut daemon: Daemon) -> Duration {
    let started = Instant::now();
    let status = daemon.terminate(Duration::from_secs(60));
    let took = started.elapsed();
    assert!(
        status.success(),
        "SIGTERM exits 0: {status}; log:\n{}",
        daemon.log()
    );
    assert!(
        took < EXIT_BOUND,
        "SIGTERM took {took:?}; log:\n{}",
        daemon.log()
    );
    took
}

#[test]
fn slowloris_half_open_and_idle_floods_neither_block_others_nor_shutdown() {
    let n = env_usize("HOSTILE_CONNECTIONS", 200);
    let app = App::new("hostile-flood", 2);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    let rss_before = daemon.rss_kib();
    let mut held = Vec::with_capacity(n * 3);
    for i in 0..n {
        // Slowloris: half a request head, then a byte now and then (below).
        let mut slow = connect_aside(daemon.http_port);
        write!(slow, "GET /v1/state/k{i} HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
        held.push(slow);
        // Idle RESP clients that connect and never send anything.
        held.push(connect_aside(daemon.resp_port));
    }
    for _ in 0..n / 2 {
        // Half-open HTTP: connected, nothing sent.
        held.push(connect_aside(daemon.http_port));
    }
    for stream in held.iter_mut().step_by(2) {
        let _ = stream.write_all(b"a");
    }
    served(&daemon);
    let rss_during = daemon.rss_kib();
    let growth = rss_during.saturating_sub(rss_before);
    eprintln!(
        "hostile flood: {n} slowloris HTTP + {n} idle RESP + {} half-open HTTP held; \
         rss {rss_before} -> {rss_during} KiB (+{growth})",
        n / 2
    );
    // Each held connection costs a task and a socket's bookkeeping, no buffers.
    let bound_kib = 32 * 1024 + 16 * (n as u64 * 5 / 2);
    assert!(
        growth < bound_kib,
        "rss grew by {growth} KiB, bound {bound_kib}"
    );
    let took = stop_in_time(daemon);
    eprintln!("hostile flood: SIGTERM with all of them open exited 0 in {took:?}");
    drop(held);
}

#[test]
fn a_pipeline_that_never_reads_is_cut_off_with_rss_bounded() {
    let megabytes = env_usize("HOSTILE_PIPELINE_MB", 20);
    let app = App::new("hostile-pipeline", 2);
    let output_limit = 1024 * 1024;
    let mut daemon = app
        .daemon("a")
        .set(&format!("query.resp_output_buffer_bytes={output_limit}"))
        .set("query.resp_output_timeout_ms=2000")
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let rss_before = daemon.rss_kib();
    // INFO: a 14-byte command with a reply of a few hundred bytes, so replies pile up fast.
    let info = b"*1\r\n$4\r\nINFO\r\n";
    let chunk: Vec<u8> = info
        .iter()
        .copied()
        .cycle()
        .take(info.len() * 4096)
        .collect();
    let port = daemon.resp_port;
    let flood = std::thread::spawn(move || {
        let mut stream = connect_aside(port);
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let total = megabytes * 1024 * 1024;
        let mut sent = 0;
        while sent < total {
            if stream.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let started = Instant::now();
    let mut rss_max = rss_before;
    while !flood.is_finished() && started.elapsed() < Duration::from_secs(60) {
        rss_max = rss_max.max(daemon.rss_kib());
        assert_eq!(resp_line(daemon.resp_port, &["PING"]), "+PONG");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = flood.join().unwrap();
    let growth = rss_max.saturating_sub(rss_before);
    eprintln!(
        "hostile pipeline: tried {megabytes} MB without reading, {:.1} MB accepted before the \
         daemon cut it off after {:?}; rss {rss_before} -> max {rss_max} KiB (+{growth})",
        sent as f64 / 1048576.0,
        started.elapsed()
    );
    assert!(
        sent < megabytes * 1024 * 1024,
        "the client was never cut off"
    );
    // The output limit plus the input buffer, with room for allocator rounding.
    let bound_kib = (output_limit as u64 / 1024) * 2 + 8 * 1024;
    assert!(
        growth < bound_kib,
        "rss grew by {growth} KiB, bound {bound_kib}"
    );
    served(&daemon);
    stop_in_time(daemon);
}

#[test]
fn an_http_pipeline_that_never_reads_is_cut_off() {
    let app = App::new("hostile-http-pipeline", 2);
    let mut daemon = app
        .daemon("a")
        .set("query.http_request_timeout_ms=2000")
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let rss_before = daemon.rss_kib();
    let port = daemon.http_port;
    let flood = std::thread::spawn(move || {
        let mut stream = connect_aside(port);
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let batch = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
        let mut sent = 0;
        for _ in 0..2000 {
            if stream.write_all(&batch).is_err() {
                break;
            }
            sent += batch.len();
        }
        sent
    });
    let started = Instant::now();
    while !flood.is_finished() && started.elapsed() < Duration::from_secs(60) {
        served(&daemon);
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = flood.join().unwrap();
    let growth = daemon.rss_kib().saturating_sub(rss_before);
    eprintln!(
        "hostile http pipeline: {:.1} MB of pipelined requests accepted before the daemon cut \
         the non-reading client off after {:?}; rss +{growth} KiB",
        sent as f64 / 1048576.0,
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60), "never cut off");
    assert!(growth < 16 * 1024, "rss grew by {growth} KiB");
    stop_in_time(daemon);
}

#[test]
fn malformed_and_oversized_frames_only_close_their_own_connection() {
    let app = App::new("hostile-frames", 2);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    let rss_before = daemon.rss_kib();
    let resp_cases: Vec<Vec<u8>> = vec![
        b"*99999999999\r\n".to_vec(),
        b"*2\r\n$3\r\nGET\r\n$2147483648\r\n".to_vec(),
        b"*1\r\n+PING\r\n".to_vec(),
        b"*-9\r\n$\x00\xff\r\n".to_vec(),
        vec![b'A'; 200 * 1024],
        // A bulk string announced at 1 MiB, half sent, then the client goes.
        [
            &b"*2\r\n$3\r\nGET\r\n$1048000\r\n"[..],
            &vec![b'x'; 512 * 1024],
        ]
        .concat(),
        (0..4096_u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    ];
    for case in &resp_cases {
        let mut bad = TcpStream::connect(("127.0.0.1", daemon.resp_port)).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = bad.write_all(case);
        let _ = bad.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = bad.read_to_end(&mut answer);
        served(&daemon);
    }
    let http_cases: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(100 * 1024)
        )
        .into_bytes(),
        format!("GET / HTTP/1.1\r\n{}\r\n", "X-H: v\r\n".repeat(5000)).into_bytes(),
        b"POST /v1/state/a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\nabc".to_vec(),
        b"GET /v1/state/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n"
            .to_vec(),
    ];
    for case in &http_cases {
        let mut bad = TcpStream::connect(("127.0.0.1", daemon.http_port)).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = bad.write_all(case);
        let mut answer = Vec::new();
        let _ = bad.read_to_end(&mut answer);
        let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
        assert!(
            answer.is_empty() || head.starts_with("HTTP/1.1 4"),
            "a 4xx or a close, got {head:?}"
        );
        served(&daemon);
    }
    let growth = daemon.rss_kib().saturating_sub(rss_before);
    eprintln!(
        "hostile frames: {} RESP and {} HTTP malformed requests, rss +{growth} KiB",
        resp_cases.len(),
        http_cases.len()
    );
    assert!(growth < 32 * 1024, "rss grew by {growth} KiB");
    stop_in_time(daemon);
}

#[test]
fn wrong_passwords_and_tokens_are_refused_and_secrets_never_shown() {
    let app = App::new("hostile-auth", 2);
    let (resp_secret, user_secret, http_secret) =
        ("resp-secret-8d1f", "user-secret-27ab", "http-secret-c0de");
    let mut daemon = app
        .daemon("a")
        .env("HELLO_STREAMS__QUERY__RESP_PASSWORD", resp_secret)
        .env("HELLO_STREAMS__QUERY__RESP_USERS__READER", user_secret)
        .env("HELLO_STREAMS__QUERY__HTTP_TOKEN", http_secret)
        .set("log.filter=debug")
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let port = daemon.resp_port;
    assert!(resp_line(port, &["GET", "x"]).starts_with("-NOAUTH"));
    assert!(resp_line(port, &["AUTH", "guess"]).starts_with("-WRONGPASS"));
    assert!(resp_line(port, &["AUTH", "reader", resp_secret]).starts_with("-WRONGPASS"));
    assert!(resp_line(port, &["HELLO", "3", "AUTH", "reader", "x"]).starts_with("-WRONGPASS"));
    assert_eq!(resp_line(port, &["AUTH", resp_secret]), "+OK");
    assert_eq!(resp_line(port, &["AUTH", "reader", user_secret]), "+OK");
    assert!(resp_line(port, &["HELLO", "3", "AUTH", "default", resp_secret]).starts_with("%7"));
    // A guesser is cut off after a few tries in one connection.
    let mut guesser = TcpStream::connect(("127.0.0.1", port)).unwrap();
    guesser
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    guesser
        .write_all(&b"*2\r\n$4\r\nAUTH\r\n$1\r\nx\r\n".repeat(50))
        .unwrap();
    let mut answer = Vec::new();
    let _ = guesser.read_to_end(&mut answer);
    assert_eq!(
        String::from_utf8_lossy(&answer)
            .matches("WRONGPASS")
            .count(),
        10
    );

    let http = daemon.http_port;
    assert_eq!(http_get(http, "/v1/state/x").unwrap().0, 401);
    assert_eq!(http_get(http, "/v1/status").unwrap().0, 401);
    assert_eq!(http_get(http, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(http, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(http, "/metrics").unwrap().0, 200);
    let mut stream = TcpStream::connect(("127.0.0.1", http)).unwrap();
    write!(
        stream,
        "GET /v1/state/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {http_secret}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    served_with_auth(&daemon, resp_secret);

    let check = std::process::Command::new(BIN)
        .current_dir(&app.state_root)
        .arg("check-config")
        .env("HELLO_STREAMS__QUERY__RESP_PASSWORD", resp_secret)
        .env("HELLO_STREAMS__QUERY__RESP_USERS__READER", user_secret)
        .env("HELLO_STREAMS__QUERY__HTTP_TOKEN", http_secret)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    stop_in_time_keep(&mut daemon);
    let log = daemon.log();
    for secret in [resp_secret, user_secret, http_secret] {
        assert!(
            !shown.contains(secret),
            "check-config shows a secret:\n{shown}"
        );
        assert!(!log.contains(secret), "the log shows a secret:\n{log}");
    }
}

fn served_with_auth(daemon: &Daemon, password: &str) {
    assert_eq!(http_get(daemon.http_port, "/healthz").unwrap().0, 200);
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.resp_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "AUTH {password}\r\nPING\r\n").unwrap();
    let mut reply = [0; 12];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n+PONG\r\n");
}

fn stop_in_time_keep(daemon: &mut Daemon) {
    let started = Instant::now();
    let status = daemon.terminate(Duration::from_secs(60));
    assert!(
        status.success() && started.elapsed() < EXIT_BOUND,
        "{status}"
    );
}

#[test]
fn tls_clients_that_never_finish_the_handshake_are_cut_off_and_others_served() {
    let n = env_usize("HOSTILE_CONNECTIONS", 200);
    let app = App::new("hostile-tls", 2);
    let certs = crate::tls::TestCerts::generate(&app.state_root.join("certs"));
    let handshake_timeout = Duration::from_millis(1000);
    let mut daemon = app
        .daemon("a")
        .tls(&certs.cert, &certs.key, &certs.ca)
        .set(&format!(
            "query.tls.handshake_timeout_ms={}",
            handshake_timeout.as_millis()
        ))
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let served_tls = |daemon: &Daemon| {
        let (status, _) =
            https_get(daemon.http_port, "/v1/state/nobody-at-all", &certs.ca, None).expect("https");
        assert_eq!(status, 404, "a new HTTPS client is served");
        let replies =
            crate::tls::redis_cli_tls(daemon.resp_port, &certs.ca, None, &["PING".into()]);
        assert_eq!(replies, ["PONG"], "a new RESP client over TLS is served");
    };
    let rss_before = daemon.rss_kib();
    let opened = Instant::now();
    let mut held = Vec::with_capacity(n * 2);
    for _ in 0..n {
        held.push(connect_aside(daemon.http_port));
        held.push(connect_aside(daemon.resp_port));
    }
    // A quarter start a ClientHello (a record header and a few bytes of it) and stop there;
    // the rest never send a byte.
    for stream in held.iter_mut().step_by(4) {
        let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00]);
    }
    served_tls(&daemon);
    let rss_during = daemon.rss_kib();
    // Every one of them is closed by the daemon once the handshake timeout passed.
    let mut last_close = Duration::ZERO;
    for stream in &mut held {
        stream
            .set_read_timeout(Some(handshake_timeout + Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!(
                    "a connection that never finished its handshake was still open after \
                     {:?}: {e}",
                    opened.elapsed()
                ),
            }
        }
        last_close = last_close.max(opened.elapsed());
    }
    eprintln!(
        "hostile tls: {} connections that never finished the handshake ({} of them half a \
         ClientHello) all closed within {last_close:?} of opening (handshake timeout \
         {handshake_timeout:?}); rss {rss_before} -> {rss_during} KiB",
        held.len(),
        held.len().div_ceil(4),
    );
    assert!(
        last_close < handshake_timeout + Duration::from_secs(5),
        "closed only after {last_close:?}"
    );
    served_tls(&daemon);
    let took = stop_in_time(daemon);
    eprintln!("hostile tls: SIGTERM exited 0 in {took:?}");
}
