//! Windowed hello counts: by event time, served over HTTP and `TS.RANGE`, late records
//! dead-lettered, exact after kill -9 and after a wipe drill, and emitted once per window
//! with `emit = "close"`.

use std::time::Duration;

use crate::common::*;

/// The start of a window well in the past, so nothing here depends on the clock.
const T0: i64 = 1_700_000_040_000;

fn as_events(records: &[(&str, &str, i64)]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|(k, v, _)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn console_producer_events_are_counted_per_minute_over_http_and_ts_range() {
    let app = App::new("windows-console", 2);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    let events: Vec<(String, String)> = [
        ("alice", "Hello"),
        ("alice", "Hello"),
        ("bob", "Hello"),
        ("alice", "Howdy"),
        ("alice", r#"{"type":"mood","mood":"ANGRY"}"#),
        ("alice", "Hello"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    console_produce(&app.input, &events);
    verify(&app, &events, Duration::from_secs(60));
    assert!(verify_windows(&app, daemon.http_port) >= 2);

    let (status, body) = http_get(daemon.http_port, "/v1/windows/alice").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let windows = v["windows"].as_array().unwrap();
    let hellos: u64 = windows.iter().map(|w| w["hellos"].as_u64().unwrap()).sum();
    let seen: u64 = windows.iter().map(|w| w["events"].as_u64().unwrap()).sum();
    assert_eq!((hellos, seen), (2, 5), "{body}");
    assert_eq!(v["windowSizeMs"], 60_000);

    // RedisTimeSeries' reply shape: pairs of window start and value.
    let ranged = redis_cli(daemon.resp_port, &["TS.RANGE", "alice", "-", "+"]);
    let lines: Vec<&str> = ranged.lines().collect();
    assert_eq!(lines.len(), 2 * windows.len(), "{ranged}");
    for (i, window) in windows.iter().enumerate() {
        assert_eq!(lines[2 * i], window["start"].to_string(), "{ranged}");
        assert_eq!(lines[2 * i + 1], window["hellos"].to_string(), "{ranged}");
    }
    assert_eq!(
        redis_cli(daemon.resp_port, &["TS.RANGE", "nobody", "0", "+"]),
        ""
    );
    let refused = redis_cli(daemon.resp_port, &["TS.RANGE", "alice", "soon", "+"]);
    assert!(refused.contains("TSDB"), "{refused}");

    let (status, body) = http_get(daemon.http_port, "/v1/top?n=1").unwrap();
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top["top"][0]["key"], "alice", "{body}");
    assert_eq!(top["top"][0]["helloCount"], 2, "{body}");
    assert_eq!(top["top"].as_array().unwrap().len(), 1);
}

#[test]
fn event_time_windows_dead_letter_late_records_and_survive_kill_9_and_a_wipe_drill() {
    let app = App::new("windows-time", 1);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    let first: Vec<(&str, &str, i64)> = vec![
        ("carol", "Hello", T0),
        ("carol", "Hello", T0 + 59_999),
        ("dave", "Hello", T0 + 30_000),
        ("carol", "Hello", T0 + 60_000),
        ("carol", "Howdy", T0 + 61_000),
        // Still on time: [T0, T0 + 60 s) closes at T0 + 70 s of stream time.
        ("dave", "Hello", T0 + 1_000),
        ("carol", "Hello", T0 + 125_000),
        // Late now: its window ended 65 s before stream time, more than the 10 s grace.
        ("dave", "Hello", T0 + 2_000),
    ];
    produce_at(&app.input, &first);
    let mut events = as_events(&first);
    verify(&app, &events, Duration::from_secs(60));
    assert_eq!(verify_windows(&app, daemon.http_port), 4);
    let (status, body) = http_get(
        daemon.http_port,
        &format!("/v1/windows/carol?from={T0}&to=1970-01-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(status, 400, "from after to: {body}");
    let (_, body) = http_get(
        daemon.http_port,
        &format!("/v1/windows/dave?from={T0}&to={}", T0 + 600_000),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["windows"][0]["hellos"], 2,
        "the late hello is not counted: {body}"
    );
    let late: Vec<Record> = read_topic(&app.dlq, "read_committed");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].headers["error.kind"], "late");
    assert_eq!(late[0].headers["source.offset"], "7");
    // The key's state counted it all the same.
    let (_, body) = http_get(daemon.http_port, "/v1/state/dave").unwrap();
    assert!(body.contains(r#""helloCount":3"#), "{body}");

    // Stream time is state too: after kill -9 and a restart from the changelog alone, a
    // record for the closed window is still late, and one for an open window is not.
    daemon.kill9();
    std::fs::remove_dir_all(app.state_dir("a")).unwrap();
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(90));
    let second: Vec<(&str, &str, i64)> = vec![
        ("dave", "Hello", T0 + 3_000),
        ("dave", "Hello", T0 + 120_500),
    ];
    produce_at(&app.input, &second);
    events.extend(as_events(&second));
    verify(&app, &events, Duration::from_secs(60));
    assert_eq!(verify_windows(&app, daemon.http_port), 5);
    assert_eq!(read_topic(&app.dlq, "read_committed").len(), 2);

    // The wipe drill: the store is rebuilt from both changelogs and compared.
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    let drilled = drill(&app, "a", &[]);
    assert!(drilled.contains("5 windows"), "{drilled}");
    let daemon = app.daemon("a").start();
    let mut daemon = daemon;
    daemon.wait_ready(Duration::from_secs(60));
    assert_eq!(verify_windows(&app, daemon.http_port), 5);
    let dump = std::process::Command::new(BIN)
        .args([
            "state",
            "windows",
            "--application-id",
            &app.id,
            "--state-dir",
        ])
        .arg(app.state_dir("a"))
        .output()
        .expect("state windows");
    let dumped = String::from_utf8_lossy(&dump.stdout);
    assert_eq!(dumped.lines().count(), 5, "{dumped}");
    assert!(
        dumped.contains(&format!(r#""start":{}"#, T0 + 120_000)),
        "{dumped}"
    );
}

#[test]
fn emit_on_close_sends_each_window_once_when_stream_time_passes_it() {
    let app = App::new("windows-close", 1);
    let mut daemon = app
        .daemon("a")
        .set("windows.emit=close")
        .set("windows.grace_ms=5000")
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    produce_at(
        &app.input,
        &[
            ("erin", "Hello", T0),
            ("erin", "Hello", T0 + 10_000),
            ("frank", "Hello", T0 + 20_000),
            // Stream time T0 + 64 s: [T0, T0 + 60 s) is still open (grace 5 s).
            ("erin", "Hello", T0 + 64_000),
        ],
    );
    // Every event has a committed count update before the window output is looked at.
    await_committed(&app.output, 4, Duration::from_secs(30));
    assert_eq!(read_topic(&app.windows, "read_committed").len(), 0);
    produce_at(&app.input, &[("erin", "Hello", T0 + 65_000)]);
    let closed = await_committed(&app.windows, 2, Duration::from_secs(30));
    let mut got: Vec<(String, i64, u64, bool)> = closed
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            (
                v["key"].as_str().unwrap().to_owned(),
                v["windowStart"].as_i64().unwrap(),
                v["hellos"].as_u64().unwrap(),
                v["final"].as_bool().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("erin".to_owned(), T0, 2, true),
            ("frank".to_owned(), T0, 1, true)
        ]
    );
    // A restart does not emit them again: what was emitted is part of the stream clock.
    daemon.kill9();
    let mut daemon = app
        .daemon("a")
        .set("windows.emit=close")
        .set("windows.grace_ms=5000")
        .start();
    daemon.wait_ready(Duration::from_secs(90));
    produce_at(&app.input, &[("erin", "Hello", T0 + 66_000)]);
    await_committed(&app.output, 6, Duration::from_secs(60));
    assert_eq!(read_topic(&app.windows, "read_committed").len(), 2);
    let (_, body) = http_get(daemon.http_port, "/v1/windows/erin?from=0").unwrap();
    assert!(
        body.contains(r#""hellos":3"#),
        "the open window holds 3: {body}"
    );
}
