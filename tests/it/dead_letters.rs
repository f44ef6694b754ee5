//! Poison events go to the dead-letter topic with the reason; counts do not move.

use std::time::Duration;

use crate::common::*;

#[test]
fn every_poison_kind_lands_once_with_its_headers() {
    let app = App::new("dlq", 2);
    let mut daemon = app
        .daemon("a")
        .set("app.max_value_bytes=1000")
        .set("app.dlq_max_value_bytes=100")
        .start();
    daemon.wait_ready(Duration::from_secs(60));
    let k = |s: &str| Some(s.as_bytes().to_vec());
    // Key, value, and the error.kind header the dead letter must carry.
    type Poison = (Option<Vec<u8>>, Option<Vec<u8>>, &'static str);
    let poison: Vec<Poison> = vec![
        (None, k("Hello"), "null_key"),
        (Some(vec![]), k("Hello"), "invalid_key"),
        (Some(vec![0xff, 0xfe]), k("Hello"), "invalid_key"),
        (Some(vec![b'k'; 256]), k("Hello"), "key_too_large"),
        (k("alice"), None, "empty_value"),
        (k("alice"), Some(vec![b'x'; 1001]), "value_too_large"),
        (k("alice"), Some(vec![0xc3, 0x28]), "invalid_utf8"),
        (k("alice"), k("{\"type\":"), "malformed_json"),
        (k("alice"), k("{\"type\":\"wave\"}"), "unknown_type"),
        (
            k("alice"),
            k("{\"type\":\"mood\",\"mood\":\"SAD\"}"),
            "unknown_mood",
        ),
    ];
    let mut records = vec![(k("alice"), k("Hello"))];
    records.extend(
        poison
            .iter()
            .map(|(key, value, _)| (key.clone(), value.clone())),
    );
    records.push((k("alice"), k("Hello")));
    produce(&app.input, &records);
    let output = await_committed(&app.output, 2, Duration::from_secs(60));
    assert_eq!(output.len(), 2, "only the two valid hellos produce output");
    let dead = await_committed(&app.dlq, poison.len(), Duration::from_secs(60));
    assert_eq!(dead.len(), poison.len(), "each poison event exactly once");
    let mut kinds: Vec<String> = dead
        .iter()
        .map(|r| r.headers["error.kind"].clone())
        .collect();
    let mut want: Vec<String> = poison.iter().map(|p| p.2.to_owned()).collect();
    kinds.sort();
    want.sort();
    assert_eq!(kinds, want);
    for record in &dead {
        for header in [
            "error.message",
            "source.topic",
            "source.partition",
            "source.offset",
            "original.size",
        ] {
            assert!(
                record.headers.contains_key(header),
                "{header} missing: {:?}",
                record.headers
            );
        }
        assert_eq!(record.headers["source.topic"], app.input);
        if record.headers["error.kind"] == "value_too_large" {
            assert_eq!(record.headers["original.size"], "1001");
            assert_eq!(
                record.value.as_ref().map(Vec::len),
                Some(100),
                "truncated to dlq_max_value_bytes"
            );
            assert_eq!(record.headers["truncated"], "true");
        }
    }
    let (status, body) = http_get(daemon.http_port, "/v1/state/alice").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["helloCount"].as_u64(), v["helloTotalCount"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        daemon.metric("hello_streams_dropped_records_total"),
        poison.len() as f64
    );
}
