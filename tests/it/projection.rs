//! The projections against real Kafka, real PostgreSQL 15 and real Redis: every key's row
//! and hash equal an independent model, exactly, across kill -9 of the projections and the
//! daemon; poison records never reach the tables; a replay changes nothing; `slice` agrees
//! with Java's own `String.hashCode`.

use std::time::Duration;

use crate::common::{produce, produce_events, unique, workload, App};
use crate::projection_support::*;

#[test]
fn projections_equal_the_model_across_kill_9() {
    let app = App::new("proj", 3);
    let db = fresh_database();
    let prefix = format!("{}:", unique("p"));
    let (pg_group, redis_group) = (unique("pg"), unique("rd"));
    let pg_args = [
        "postgres",
        "--url",
        &db,
        "--create-tables",
        "--event-journal",
    ];
    let redis_args = ["redis", "--url", &redis_url(), "--prefix", &prefix];
    let events = workload(30_000, 400, 13);
    let (first, rest) = events.split_at(10_000);
    let (second, third) = rest.split_at(10_000);

    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    let mut pg = start_projection(&app, &pg_group, &pg_args);
    let mut rd = start_projection(&app, &redis_group, &redis_args);
    produce_events(&app.input, first);
    // Both projections write while records arrive; kill them mid-stream, with batches open.
    let mut written = 0;
    for _ in 0..200 {
        written = psql(&db, "SELECT count(*) FROM durable_state")
            .trim()
            .parse()
            .unwrap();
        if written > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(written > 0, "no rows within 20 s; log:\n{}", pg.log());
    produce_events(&app.input, &second[..5_000]);
    pg.kill9();
    rd.kill9();
    produce_events(&app.input, &second[5_000..]);
    // And the daemon, so hello-counts continues from a restored store.
    daemon.kill9();
    let metrics_port = crate::common::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let restart_args = [&pg_args[..], &["--metrics-addr", &metrics_addr]].concat();
    let mut pg = start_projection(&app, &pg_group, &restart_args);
    let mut daemon = app.daemon("a").start();
    produce_events(&app.input, third);
    daemon.wait_ready(Duration::from_secs(90));
    let mut rd = start_projection(&app, &redis_group, &redis_args);

    let want = expected_rows(&events);
    await_rows("durable_state", &want, Duration::from_secs(120), || {
        durable_state(&db)
    });
    await_rows("redis hashes", &want, Duration::from_secs(60), || {
        redis_hashes(&prefix, want.keys())
    });
    pg.assert_running();
    rd.assert_running();

    // One journal row per applied event, seq_nr 1..=revision for every key.
    let journal = psql(
        &db,
        "SELECT count(*), count(DISTINCT persistence_id), sum(seq_nr) FROM event_journal",
    );
    let expected_sum: u64 = want
        .values()
        .map(|r| r.revision * (r.revision + 1) / 2)
        .sum();
    assert_eq!(
        journal.trim(),
        format!("{}\t{}\t{expected_sum}", events.len(), want.len())
    );
    // The offsets are the last hello-counts offset of each partition.
    let offsets = psql(
        &db,
        &format!(
            "SELECT projection_key, current_offset, manifest FROM pekko_projection_offset_store \
             WHERE projection_name = '{pg_group}' ORDER BY 1"
        ),
    );
    assert_eq!(offsets.lines().count(), 3, "{offsets}");
    assert!(offsets.lines().all(|l| l.ends_with("\tLNG")), "{offsets}");

    // The command users run: store, PostgreSQL and Redis key by key.
    let (ok, report) = verify(
        &app,
        "a",
        &[
            "--postgres",
            &db,
            "--redis",
            &redis_url(),
            "--prefix",
            &prefix,
            "--wait-secs",
            "30",
        ],
    );
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("verified {} store keys", want.len())),
        "{report}"
    );
    assert!(report.contains(", 0 mismatches"), "{report}");

    // The restarted projection went on from the offsets it had stored, not from scratch.
    assert!(pg.log().contains("Offset("), "{}", pg.log());
    let (status, metrics) = crate::common::http_get(metrics_port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{target=\"postgres\"}} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(
        metric("hello_streams_projection_rows_written_total") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        metric("hello_streams_projection_errors_total"),
        0.0,
        "{metrics}"
    );
    pg.terminate();
    rd.terminate();
}

#[test]
fn poison_records_never_reach_the_tables_and_a_replay_changes_nothing() {
    let app = App::new("proj-poison", 1);
    create_topic(&app.output, 1);
    let db = fresh_database();
    let prefix = format!("{}:", unique("p"));
    let good = |key: &str, revision: u64, count: u64| {
        let value = serde_json::json!({
            "key": key, "helloCount": count, "helloTotalCount": count, "mood": "HAPPY",
            "outcome": "counted", "reply": "Kotlin", "revision": revision,
            "sourcePartition": 0, "sourceOffset": revision, "eventTimestamp": 1, "processedAt": 2
        });
        (
            Some(key.as_bytes().to_vec()),
            Some(value.to_string().into_bytes()),
        )
    };
    let bad = |key: Option<&str>, value: &[u8]| {
        (key.map(|k| k.as_bytes().to_vec()), Some(value.to_vec()))
    };
    let records = vec![
        good("alice", 1, 1),
        bad(Some("mallory"), b"not json"),
        bad(
            None,
            br#"{"key":"nokey","helloCount":1,"helloTotalCount":1,"mood":"HAPPY","revision":1}"#,
        ),
        bad(
            Some("eve"),
            br#"{"key":"eve","helloCount":1,"helloTotalCount":1,"mood":"SAD","revision":1}"#,
        ),
        bad(
            Some("trudy"),
            br#"{"key":"oscar","helloCount":1,"helloTotalCount":1,"mood":"HAPPY","revision":1}"#,
        ),
        good("alice", 2, 2),
        good("bob", 1, 1),
    ];
    produce(&app.output, &records);
    let want: std::collections::HashMap<String, Row> = [
        (
            "alice",
            Row {
                count: 2,
                total: 2,
                mood: "HAPPY".into(),
                revision: 2,
            },
        ),
        (
            "bob",
            Row {
                count: 1,
                total: 1,
                mood: "HAPPY".into(),
                revision: 1,
            },
        ),
    ]
    .into_iter()
    .map(|(k, r)| (k.to_owned(), r))
    .collect();
    let group = unique("pg");
    let mut pg = start_projection(&app, &group, &["postgres", "--url", &db, "--create-tables"]);
    let redis_args = ["redis", "--url", &redis_url(), "--prefix", &prefix];
    let mut rd = start_projection(&app, &unique("rd"), &redis_args);
    await_rows("durable_state", &want, Duration::from_secs(60), || {
        durable_state(&db)
    });
    let watched = ["alice", "bob", "mallory", "nokey", "eve", "trudy", "oscar"].map(String::from);
    await_rows("redis hashes", &want, Duration::from_secs(60), || {
        redis_hashes(&prefix, &watched)
    });
    let offset = |db: &str| {
        psql(db, &format!("SELECT current_offset FROM pekko_projection_offset_store WHERE projection_name = '{group}'"))
    };
    eventually("offset 6 stored", Duration::from_secs(30), || {
        offset(&db).trim() == "6"
    });
    pg.terminate();
    rd.terminate();
    assert_eq!(
        pg.log().matches("skipping a record").count(),
        4,
        "{}",
        pg.log()
    );
    assert_eq!(
        rd.log().matches("skipping a record").count(),
        4,
        "{}",
        rd.log()
    );

    // Forget the offsets: the projection reads everything again, and the revision checks
    // leave every row as it was (db_timestamp included).
    let before = psql(
        &db,
        "SELECT persistence_id, revision, db_timestamp FROM durable_state ORDER BY 1",
    );
    psql(
        &db,
        "UPDATE pekko_projection_offset_store SET current_offset = '-1'",
    );
    let mut pg = start_projection(&app, &group, &["postgres", "--url", &db]);
    eventually("offset 6 stored", Duration::from_secs(30), || {
        offset(&db).trim() == "6"
    });
    pg.terminate();
    let after = psql(
        &db,
        "SELECT persistence_id, revision, db_timestamp FROM durable_state ORDER BY 1",
    );
    assert_eq!(before, after);
    assert!(pg.log().contains("unchanged=2"), "{}", pg.log());
}

/// Java's own `String.hashCode`, run with the single-file source launcher.
#[test]
fn slices_agree_with_java_string_hash_code() {
    use hello_streams::projection::slice::{java_string_hash, persistence_id, slice};
    let keys: Vec<String> = vec![
        "alice".into(),
        "user-12345".into(),
        "안녕하세요".into(),
        "사용자:김철수".into(),
        "k".repeat(255),
        "가".repeat(85), // 255 bytes of UTF-8
        format!("{}x", "나".repeat(84)),
        "😀 emoji outside the BMP".into(),
    ];
    for key in &keys {
        assert!(key.len() <= 255, "{key}");
    }
    let ids: Vec<String> = keys
        .iter()
        .map(|k| persistence_id("HelloState", k))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("SliceOf.java");
    std::fs::write(
        &source,
        r#"
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

public class SliceOf {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String id;
        while ((id = in.readLine()) != null) {
            int hash = id.hashCode();
            System.out.println(hash + " " + Math.abs(hash % 1024));
        }
    }
}
"#,
    )
    .unwrap();
    let mut child = std::process::Command::new("java")
        .arg(&source)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("java is on the machine");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for id in &ids {
            writeln!(stdin, "{id}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let java: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let ours: Vec<String> = ids
        .iter()
        .map(|id| format!("{} {}", java_string_hash(id), slice(id)))
        .collect();
    assert_eq!(ours, java);
}
