//! The product's main path: events in, exact counts out.

use std::time::Duration;

use crate::common::*;

#[test]
fn console_producer_and_json_events_give_exact_counts() {
    let app = App::new("processing", 3);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    // Plain `key:Hello` lines and JSON events, all through the real kafka-console-producer.
    let events = workload(3_000, 40, 7);
    console_produce(&app.input, &events);
    let verified = verify(&app, &events, Duration::from_secs(90));
    println!("verified {verified} output records from kafka-console-producer input");
    verify_queries(daemon.http_port, &events);
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean exit: {status}; log:\n{}",
        daemon.log()
    );
}

#[test]
fn at_least_once_gives_exact_state_too() {
    let app = App::new("alos", 2);
    let mut daemon = app
        .daemon("a")
        .set("app.processing_guarantee=at_least_once")
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let events = workload(2_000, 25, 11);
    produce_events(&app.input, &events);
    verify(&app, &events, Duration::from_secs(90));
    verify_queries(daemon.http_port, &events);
}

#[test]
fn a_punctuation_reset_survives_a_state_wipe() {
    let app = App::new("punctuate", 2);
    let mut daemon = app.daemon("a").set("app.reset_interval_ms=1000").start();
    daemon.wait_ready(Duration::from_secs(60));
    let events: Vec<_> = (0..20)
        .map(|i| (format!("k{}", i % 4), "Hello".to_owned()))
        .collect();
    produce_events(&app.input, &events);
    await_committed(&app.output, events.len(), Duration::from_secs(60));
    // Wait for a punctuation after the hellos: every helloCount reads 0, totals stay.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(daemon.http_port, "/v1/state/k0").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["helloCount"] == 0 {
            assert_eq!(v["helloTotalCount"], 5);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no punctuation: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.terminate(Duration::from_secs(30));
    std::fs::remove_dir_all(app.state_dir("a")).unwrap();
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    for k in 0..4 {
        let (_, body) = http_get(daemon.http_port, &format!("/v1/state/k{k}")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["helloCount"].as_u64(), v["helloTotalCount"].as_u64()),
            (Some(0), Some(5)),
            "k{k}: {body}"
        );
    }
}
