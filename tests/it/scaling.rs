//! More instances with one application id share the partitions; Kafka's group decides.

use std::time::Duration;

use crate::common::*;

#[test]
fn two_instances_split_the_partitions_and_one_takes_over() {
    let app = App::new("scale", 4);
    let events = workload(12_000, 120, 13);
    let (first, second) = events.split_at(events.len() / 2);
    let mut a = app.daemon("a").start();
    a.wait_ready(Duration::from_secs(60));
    let mut b = app.daemon("b").start();
    // Both own something once the group settled.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let owned = |d: &Daemon| {
            http_get(d.http_port, "/v1/status")
                .ok()
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                .map(|v| v["partitions"].as_array().map_or(0, |p| p.len()))
                .unwrap_or(0)
        };
        if owned(&a) > 0 && owned(&b) > 0 && owned(&a) + owned(&b) == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partitions never split"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.wait_ready(Duration::from_secs(60));
    produce_events(&app.input, first);
    let (expected, _) = model(first);
    await_committed(&app.output, first.len(), Duration::from_secs(90));
    // Any instance answers for any key, its own directly and the other's through a redirect,
    // with exactly the model's value. Stores are written just after the commit the reader
    // saw, so a key may briefly lag: retry, but never accept a wrong value as final.
    for (key, want) in &expected {
        for port in [a.http_port, b.http_port] {
            let url = format!("http://127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (status, body) = hello_streams::query::client::get_state(&url, key).unwrap();
                assert!(
                    status == 200 || status == 503,
                    "{key} via {port}: {status} {body}"
                );
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if status == 200
                    && v["helloCount"].as_u64() == Some(want.count)
                    && v["helloTotalCount"].as_u64() == Some(want.total)
                {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{key} via {port}: {body}, want {want:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let status = b.terminate(Duration::from_secs(30));
    assert!(status.success());
    produce_events(&app.input, second);
    verify(&app, &events, Duration::from_secs(120));
    a.wait_ready(Duration::from_secs(60));
    verify_queries(a.http_port, &events);
}

#[test]
fn stream_threads_split_the_partitions_and_survive_a_kill_9() {
    let app = App::new("threads", 4);
    let events = workload(20_000, 150, 17);
    let slices: Vec<_> = events.chunks(events.len() / 2 + 1).collect();
    let start = || app.daemon("a").set("app.stream_threads=2").start();
    let mut daemon = start();
    daemon.wait_ready(Duration::from_secs(60));
    produce_events(&app.input, slices[0]);
    // Each thread is its own group member with its own transactional producer; a kill -9
    // mid-stream leaves both producers' transactions open, and the restart fences both.
    std::thread::sleep(Duration::from_millis(400));
    daemon.kill9();
    daemon = start();
    daemon.wait_ready(Duration::from_secs(60));
    produce_events(&app.input, slices[1]);
    let verified = verify(&app, &events, Duration::from_secs(120));
    println!("verified {verified} records across two stream threads and a kill -9");
    verify_queries(daemon.http_port, &events);
    // Both threads ended up with work: the group split the partitions between them.
    let log = plain(&daemon.log());
    for thread in ["thread=0", "thread=1"] {
        assert!(
            log.lines().any(|l| l.contains("partitions assigned")
                && l.contains(thread)
                && !l.contains("partitions=[]")),
            "{thread} was never assigned a partition:\n{log}"
        );
    }
}
