//! Interactive queries over HTTP and the Redis protocol after a real run.

use std::time::Duration;

use crate::common::*;

#[test]
fn http_and_resp_answer_what_the_fold_predicts() {
    let app = App::new("queries", 3);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    let events = workload(2_000, 30, 21);
    produce_events(&app.input, &events);
    verify(&app, &events, Duration::from_secs(90));
    verify_queries(daemon.http_port, &events);
    let (expected, _) = model(&events);
    assert_eq!(redis_cli(daemon.resp_port, &["PING"]), "PONG");
    for (key, want) in &expected {
        assert_eq!(
            redis_cli(daemon.resp_port, &["GET", key]),
            want.count.to_string(),
            "GET {key}"
        );
    }
    let keys: Vec<&String> = expected.keys().take(3).collect();
    let mget = redis_cli(daemon.resp_port, &["MGET", keys[0], keys[1], keys[2]]);
    let want: Vec<String> = keys
        .iter()
        .map(|k| expected[*k].count.to_string())
        .collect();
    assert_eq!(mget.lines().collect::<Vec<_>>(), want);
    let hgetall = redis_cli(daemon.resp_port, &["HGETALL", keys[0]]);
    assert!(hgetall.contains("helloTotalCount"), "{hgetall}");
    assert!(
        hgetall.contains(&expected[keys[0]].total.to_string()),
        "{hgetall}"
    );
    let (status, _) = http_get(daemon.http_port, "/v1/state/nobody-ever").unwrap();
    assert_eq!(status, 404);
    check_scrape(&daemon, &events);
}

/// The Prometheus scrape after the run: names, labels and values against the model. Record
/// counters count committed work only, so they are exact even if a transaction aborted.
fn check_scrape(daemon: &Daemon, events: &[(String, String)]) {
    let (_, steps) = model(events);
    let counted = steps
        .values()
        .flatten()
        .filter(|s| s.outcome == "counted")
        .count() as f64;
    // The output is visible a moment before the commit's metrics are added, and lag is
    // measured at the next fetch.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (status, scrape) = http_get(daemon.http_port, "/metrics").unwrap();
        assert_eq!(status, 200);
        let lag_zero = (0..3).all(|p| {
            scrape.contains(&format!(
                "hello_streams_records_lag{{partition=\"{p}\"}} 0\n"
            ))
        });
        let all_in =
            metric_sum(&scrape, "hello_streams_process_total") == Some(events.len() as f64);
        if (lag_zero && all_in) || std::time::Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let get = |name: &str| metric_sum(&scrape, name).unwrap_or_else(|| panic!("{name}:\n{scrape}"));
    assert_eq!(
        get("hello_streams_process_total"),
        events.len() as f64,
        "{scrape}"
    );
    assert_eq!(
        get("hello_streams_hellos_counted_total"),
        counted,
        "{scrape}"
    );
    assert_eq!(get("hello_streams_dropped_records_total"), 0.0, "{scrape}");
    assert!(
        scrape.contains("hello_streams_process_total{thread=\"0\"} "),
        "thread label: {scrape}"
    );
    // Every committed record was observed once, in the histogram's +Inf bucket too.
    assert_eq!(
        get("hello_streams_record_e2e_latency_seconds_count"),
        events.len() as f64
    );
    assert_eq!(
        get("hello_streams_record_e2e_latency_seconds_bucket{thread=\"0\",le=\"+Inf\"}"),
        events.len() as f64
    );
    let commits = get("hello_streams_commit_total");
    assert!(commits >= 1.0, "{scrape}");
    assert_eq!(get("hello_streams_commit_latency_seconds_count"), commits);
    for partition in 0..3 {
        assert!(
            scrape.contains(&format!(
                "hello_streams_records_lag{{partition=\"{partition}\"}} 0\n"
            )),
            "lag of partition {partition}: {scrape}"
        );
    }
    // The HTTP and RESP reads above asked for every key at least twice.
    assert!(
        get("hello_streams_query_cache_hits_total") > 0.0,
        "{scrape}"
    );
    assert!(
        get("hello_streams_query_cache_misses_total") > 0.0,
        "{scrape}"
    );
    assert_eq!(get("hello_streams_active_tasks"), 3.0);
    // Every key was read over HTTP and RESP, each redis-cli call on its own connection.
    let keys = steps.len() as f64;
    for server in ["http", "resp"] {
        let requests = get(&format!(
            "hello_streams_query_requests_total{{server=\"{server}\"}}"
        ));
        assert!(
            requests >= keys,
            "{server} requests {requests} < {keys} keys: {scrape}"
        );
        let connections = get(&format!(
            "hello_streams_query_connections_total{{server=\"{server}\"}}"
        ));
        assert!(connections >= 1.0, "{server}: {scrape}");
    }
    assert_eq!(get("hello_streams_query_connections_refused_total"), 0.0);
}
