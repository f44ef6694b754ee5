//! Read-your-writes: a client that produced an event and reads with `?after=<its offset>`
//! (HTTP) or `GET key AFTER <its offset> WAITMS n` (RESP) sees that event's effect in the
//! first answer, from either instance of a group.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::common::*;
use crate::redis_clients::http_get_auth;

/// Where one read goes: by HTTP or RESP, to instance a or b.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    HttpA,
    HttpB,
    RespA,
    RespB,
}

const VIAS: [Via; 4] = [Via::HttpA, Via::HttpB, Via::RespA, Via::RespB];

/// The first answer for `key` read after `offset`: its helloCount, or what came instead.
fn read_after(via: Via, a: &Daemon, b: &Daemon, key: &str, offset: i64) -> Result<u64, String> {
    match via {
        Via::HttpA | Via::HttpB => {
            let port = if via == Via::HttpA {
                a.http_port
            } else {
                b.http_port
            };
            let path = format!("/v1/state/{key}?after={offset}&wait_ms=5000");
            let (status, body) = http_get_auth(port, &path, None);
            let state: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let reached = state["position"]["offset"].as_i64().unwrap_or(-1) >= offset;
            match state["helloCount"].as_u64() {
                Some(count) if status == 200 && reached => Ok(count),
                _ => Err(format!("{status} {body}")),
            }
        }
        Via::RespA | Via::RespB => {
            let port = if via == Via::RespA {
                a.resp_port
            } else {
                b.resp_port
            };
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
            let mut con = client.get_connection().map_err(|e| e.to_string())?;
            redis::cmd("GET")
                .arg(key)
                .arg("AFTER")
                .arg(offset)
                .arg("WAITMS")
                .arg(5000)
                .query::<Option<u64>>(&mut con)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "nil".to_owned())
        }
    }
}

#[test]
fn a_read_after_its_own_write_sees_it_on_either_instance_over_http_and_resp() {
    let app = App::new("ryw", 6);
    let mut a = app.daemon("a").start();
    a.wait_ready(Duration::from_secs(60));
    let mut b = app.daemon("b").start();
    b.wait_ready(Duration::from_secs(90));
    a.wait_ready(Duration::from_secs(90));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("ryw-{i}")).collect();
    // Warm-up: one ignored greeting per key, read back with `after=` until both instances
    // process (a freshly assigned partition's first fetch can take seconds).
    let warm = std::time::Instant::now();
    for (i, key) in keys.iter().enumerate() {
        let record = FutureRecord::to(&app.input).key(key).payload("Howdy");
        let future = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .expect("queued");
        let delivery = futures::executor::block_on(future).expect("delivery report");
        let offset = delivery.map_err(|(e, _)| e).expect("delivered").offset;
        let port = if i % 2 == 0 { a.http_port } else { b.http_port };
        let path = format!("/v1/state/{key}?after={offset}&wait_ms=5000");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while http_get_auth(port, &path, None).0 != 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "{key} never processed"
            );
        }
    }
    eprintln!("read-your-writes: warm-up took {:?}", warm.elapsed());
    let mut reads = [0_usize; 4];
    // Four rounds: every key is read once by each protocol on each instance.
    for round in 1..=4_u64 {
        // Each key's hello, with the offset its delivery report gives.
        let mut written = Vec::new();
        for key in &keys {
            let record = FutureRecord::to(&app.input).key(key).payload("Hello");
            let future = producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued");
            let delivery = futures::executor::block_on(future).expect("delivery report");
            let delivery = delivery.map_err(|(e, _)| e).expect("delivered");
            written.push((key, delivery.partition, delivery.offset));
        }
        for (i, (key, partition, offset)) in written.iter().enumerate() {
            let via = VIAS[(i + round as usize) % VIAS.len()];
            match read_after(via, &a, &b, key, *offset) {
                Ok(count) => assert_eq!(count, round, "round {round} {key} via {via:?}"),
                Err(answer) => {
                    let (_, on_a) = http_get_auth(a.http_port, "/v1/status", None);
                    let (_, on_b) = http_get_auth(b.http_port, "/v1/status", None);
                    panic!(
                        "round {round} {key} (partition {partition}, offset {offset}) via \
                         {via:?}: {answer}\na: {on_a}\nb: {on_b}"
                    );
                }
            }
            reads[via as usize] += 1;
        }
    }
    // Far ahead: a clear "not yet", never a stale answer.
    let (status, body) = http_get_auth(
        a.http_port,
        "/v1/state/ryw-1?after=999999999&wait_ms=200",
        None,
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not_yet"), "{body}");
    for port in [a.resp_port, b.resp_port] {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut con = client.get_connection().unwrap();
        let far = redis::cmd("GET")
            .arg("ryw-1")
            .arg("AFTER")
            .arg(999_999_999)
            .arg("WAITMS")
            .arg(200)
            .query::<Option<u64>>(&mut con)
            .unwrap_err();
        assert_eq!(far.code(), Some("NOTYET"), "{far}");
    }
    eprintln!(
        "read-your-writes: over {} keys, reads after their own write via \
         [http a, http b, resp a, resp b] = {reads:?}, every first answer saw it",
        keys.len()
    );
}
