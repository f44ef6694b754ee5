//! Process crashes: kill -9 under load, a crash between produce and commit (fault hook),
//! poison events across crashes, and a clean SIGTERM that must leave nothing to replay.

use std::time::Duration;

use rdkafka::producer::{BaseRecord, Producer as _};

use crate::common::*;
use crate::support::*;

/// Case 1: kill -9 three times while a thread keeps feeding 60k events over 500 keys.
#[test]
fn c01_kill9_three_times_during_load() {
    let case = case(
        "c01_kill9_three_times_during_load",
        Duration::from_secs(300),
    );
    let app = App::new("f01", 6);
    let events = workload(60_000, 500, 101);
    let mut d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(90));
    let feeder = feed(&app.input, raw(&events), 1_000, Duration::from_millis(500));
    for round in 1..=3u64 {
        std::thread::sleep(Duration::from_millis(1_500 + 1_000 * round));
        let processed = d.metric("hello_streams_process_total");
        let feeding = !feeder.is_finished();
        case.step(format!(
            "kill -9 #{round}: {processed} records taken by this incarnation, feeder still running: {feeding}"
        ));
        d.kill9();
        d = case.start(daemon(&app, "a"));
        d.wait_ready(Duration::from_secs(90));
        case.step(format!("restarted #{round}, ready"));
    }
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    check_everything(&case, &app, &events, &[], d.http_port);
}

/// Case 2: the process dies after its transaction's records were produced and before the
/// commit (fault hook `crash-before-commit:N`, compiled with `--features fault-hooks`), three
/// times at different commits while input keeps arriving; a restart without the hook must
/// abort the leftovers and go on exactly once.
#[test]
fn c02_crash_after_produce_before_commit() {
    let case = case(
        "c02_crash_after_produce_before_commit",
        Duration::from_secs(240),
    );
    let app = App::new("f02", 6);
    let events = workload(30_000, 300, 202);
    let mut next = 0usize;
    let producer = producer();
    // Topics exist once a daemon started; the first one runs without a hook.
    let mut d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(90));
    d.terminate(Duration::from_secs(30));
    for n in [1u32, 4, 2] {
        let spec = format!("crash-before-commit:{n}");
        let mut d = start_hooked(&app, "a", &spec);
        case.watch(&d.log_path);
        // Keep input arriving until the hook fires.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut status = None;
        while std::time::Instant::now() < deadline && next < events.len() {
            send_chunk(&producer, &app.input, &events, &mut next, 400);
            status = d.wait_exit(Duration::from_millis(150));
            if status.is_some() {
                break;
            }
        }
        let status = status.or_else(|| d.wait_exit(Duration::from_secs(20)));
        let Some(status) = status else {
            let metrics = http_get(d.http_port, "/metrics")
                .map(|(_, body)| {
                    body.lines()
                        .filter(|l| !l.starts_with("# "))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            panic!(
                "the daemon with {spec} did not crash ({next} events fed; was the daemon built \
                 with --features fault-hooks?)\nmetrics:\n{metrics}\nlog:\n{}",
                tail(&d.log(), 40)
            );
        };
        let log = d.log();
        assert!(
            log.contains(&format!("fault hook: crashing before commit {n}")),
            "the daemon exited ({status}), but not through the fault hook; log:\n{}",
            tail(&log, 60)
        );
        let committed = read_topic(&app.output, "read_committed").len();
        let uncommitted = read_topic(&app.output, "read_uncommitted").len();
        case.step(format!(
            "crashed before commit {n} ({status}) with {next} events fed; output: {committed} committed, {uncommitted} incl. uncommitted/aborted"
        ));
        assert!(
            uncommitted >= committed,
            "read_uncommitted sees at least the committed records"
        );
    }
    assert!(next < events.len(), "events left for after the crashes");
    d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(90));
    while next < events.len() {
        send_chunk(&producer, &app.input, &events, &mut next, 2_000);
    }
    case.step(format!("restarted without the hook; fed all {next} events"));
    check_everything(&case, &app, &events, &[], d.http_port);
}

/// Produces the next `n` events (from `*next`) and waits until they are acknowledged.
fn send_chunk(
    producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    events: &[(String, String)],
    next: &mut usize,
    n: usize,
) {
    let end = (*next + n).min(events.len());
    for (key, value) in &events[*next..end] {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(value.as_bytes());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    *next = end;
}

/// A deterministic mix of valid events and every kind of poison (one in `every`).
fn with_poison(valid: &[(String, String)], every: usize) -> (Vec<Raw>, Vec<Raw>) {
    let mut all = Vec::new();
    let mut poison = Vec::new();
    for (i, (key, value)) in valid.iter().enumerate() {
        if i % every == every - 1 {
            let k = Some(key.as_bytes().to_vec());
            let b = |s: String| Some(s.into_bytes());
            let bad: Raw = match (i / every) % 8 {
                0 => (None, b(format!("Hello {i}"))),
                1 => (Some(Vec::new()), b(format!("Hello {i}"))),
                2 => (k, b(format!("{{\"type\":{i}"))),
                3 => (k, b(format!("{{\"type\":\"wave-{i}\"}}"))),
                4 => (k, b(format!("{{\"type\":\"mood\",\"mood\":\"SAD-{i}\"}}"))),
                5 => (k, None),
                6 => (k, Some(vec![0xc3, 0x28, (i % 200) as u8 + 0x30])),
                _ => (Some(vec![b'k'; 256 + i % 7]), b(format!("Hello {i}"))),
            };
            all.push(bad.clone());
            poison.push(bad);
        }
        all.push((
            Some(key.as_bytes().to_vec()),
            Some(value.as_bytes().to_vec()),
        ));
    }
    (all, poison)
}

/// Case 8: poison events interleaved with valid ones while the daemon is killed -9 three
/// times: each poison record lands in the dead-letter topic exactly once.
#[test]
fn c08_poison_with_kill9_cycles_lands_once() {
    let case = case(
        "c08_poison_with_kill9_cycles_lands_once",
        Duration::from_secs(240),
    );
    let app = App::new("f08", 6);
    let events = workload(30_000, 300, 808);
    let (records, poison) = with_poison(&events, 40);
    let mut d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(90));
    let feeder = feed(&app.input, records, 600, Duration::from_millis(500));
    for round in 1..=3u64 {
        std::thread::sleep(Duration::from_millis(1_500 + 800 * round));
        let dead = d.metric("hello_streams_dropped_records_total");
        case.step(format!(
            "kill -9 #{round}: {dead} dead letters by this incarnation, feeder running: {}",
            !feeder.is_finished()
        ));
        d.kill9();
        d = case.start(daemon(&app, "a"));
        d.wait_ready(Duration::from_secs(90));
    }
    let fed = join_feeder(feeder);
    case.step(format!(
        "fed {fed} records, {} of them poison",
        poison.len()
    ));
    check_everything(&case, &app, &events, &poison, d.http_port);
}

/// Case 10: SIGTERM (idle, then in the middle of load) and a restart: the clean shutdown
/// committed and checkpointed everything, so nothing is restored from the changelog.
#[test]
fn c10_sigterm_restart_replays_nothing() {
    let case = case(
        "c10_sigterm_restart_replays_nothing",
        Duration::from_secs(180),
    );
    let app = App::new("f10", 6);
    let events = workload(24_000, 400, 1010);
    let (first, second) = events.split_at(10_000);
    let mut d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(90));
    produce_events(&app.input, first);
    let got = await_committed(&app.output, first.len(), Duration::from_secs(90)).len();
    assert_eq!(got, first.len(), "first batch processed");
    let check_restart = |d: &mut Daemon, what: &str| {
        let started = std::time::Instant::now();
        let status = d.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "exit 0 on SIGTERM ({what}): {status}; log:\n{}",
            log_tail(d, 40)
        );
        let stopped = started.elapsed();
        let mut next = case.start(daemon(&app, "a"));
        next.wait_ready(Duration::from_secs(90));
        let restored = next.metric("hello_streams_restore_total");
        let rebuilt = next.metric("hello_streams_stores_rebuilt_total");
        case.step(format!(
            "SIGTERM {what}: exit after {stopped:?}; restart restored {restored} records, rebuilt {rebuilt} stores"
        ));
        assert_eq!(
            restored,
            0.0,
            "nothing replayed after SIGTERM ({what}); log:\n{}",
            next.log()
        );
        assert_eq!(rebuilt, 0.0, "no store rebuilt after SIGTERM ({what})");
        next
    };
    d = check_restart(&mut d, "while idle");
    let feeder = feed(&app.input, raw(second), 700, Duration::from_millis(200));
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(!feeder.is_finished(), "SIGTERM lands during load");
    d = check_restart(&mut d, "during load");
    join_feeder(feeder);
    check_everything(&case, &app, &events, &[], d.http_port);
}
