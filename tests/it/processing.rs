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

#[test]
fn an_idle_thread_commits_without_waiting_for_the_interval() {
    // An interval far beyond the waits below: only the commit on idle input can make the
    // outputs visible in time, and with it off nothing is visible until the interval or the
    // final commit of a clean stop.
    const SLOW: [&str; 2] = [
        "app.commit_interval_ms=60000",
        "kafka.transaction_timeout_ms=120000",
    ];
    let app = App::new("idle-commit", 2);
    let mut daemon = app.daemon("a").set(SLOW[0]).set(SLOW[1]).start();
    daemon.wait_ready(Duration::from_secs(60));
    let events = workload(300, 12, 5);
    produce_events(&app.input, &events);
    verify(&app, &events, Duration::from_secs(30));
    daemon.terminate(Duration::from_secs(30));

    let app = App::new("interval-commit", 2);
    let mut daemon = app
        .daemon("a")
        .set(SLOW[0])
        .set(SLOW[1])
        .set("app.commit_when_idle=false")
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let events = workload(300, 12, 6);
    produce_events(&app.input, &events);
    std::thread::sleep(Duration::from_secs(5));
    let early = read_topic(&app.output, "read_committed");
    assert!(
        early.is_empty(),
        "{} outputs visible before any commit",
        early.len()
    );
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "clean exit: {status}; log:\n{}",
        daemon.log()
    );
    verify(&app, &events, Duration::from_secs(30));
}
