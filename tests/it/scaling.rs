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
    // Any instance answers for any key (the other's keys through a redirect).
    for key in expected.keys().take(20) {
        for port in [a.http_port, b.http_port] {
            let (status, body) =
                hello_streams::query::client::get_state(&format!("http://127.0.0.1:{port}"), key)
                    .unwrap();
            assert!(
                status == 200 || status == 503,
                "{key} via {port}: {status} {body}"
            );
        }
    }
    let status = b.terminate(Duration::from_secs(30));
    assert!(status.success());
    produce_events(&app.input, second);
    verify(&app, &events, Duration::from_secs(120));
    a.wait_ready(Duration::from_secs(60));
    verify_queries(a.http_port, &events);
}
