//! Read-your-writes: a client that produced an event and reads with `?after=<its offset>`
//! sees that event's effect in the first answer, from either instance of a group.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::common::*;
use crate::redis_clients::http_get_auth;

#[test]
fn a_read_after_its_own_write_sees_it_on_either_instance() {
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
    let mut reads = 0;
    for round in 1..=3_u64 {
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
            let port = if i % 2 == 0 { a.http_port } else { b.http_port };
            let path = format!("/v1/state/{key}?after={offset}&wait_ms=5000");
            let (status, body) = http_get_auth(port, &path, None);
            if status != 200 {
                let (_, on_a) = http_get_auth(a.http_port, "/v1/status", None);
                let (_, on_b) = http_get_auth(b.http_port, "/v1/status", None);
                let (_, direct) = http_get_auth(port, &format!("/v1/state/{key}"), None);
                panic!(
                    "round {round} {key} (partition {partition}, offset {offset}) via {}: \
                     {status} {body}\nwithout after: {direct}\na: {on_a}\nb: {on_b}",
                    if port == a.http_port { "a" } else { "b" }
                );
            }
            let state: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(state["helloCount"], round, "round {round} {key}: {body}");
            assert_eq!(state["position"]["partition"], *partition, "{body}");
            assert!(
                state["position"]["offset"].as_i64().unwrap() >= *offset,
                "{body}"
            );
            reads += 1;
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
    eprintln!(
        "read-your-writes: {reads} reads with after= over {} keys, all saw their write",
        keys.len()
    );
}
