//! Interactive queries over HTTP and the Redis protocol after a real run.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    assert!(
        output.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

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
    let (status, metrics) = http_get(daemon.http_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("hello_streams_process_total"), "{metrics}");
}
