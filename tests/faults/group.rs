//! Group membership: instances joining and leaving under load, a paused (SIGSTOP) instance
//! that must be fenced, and reads while partitions move and restore.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

/// Case 5: three instances join and leave during load; one is paused with SIGSTOP beyond the
/// session timeout (6 s in the tests) and resumed: it must be fenced, and no input record may
/// produce output twice (verify checks duplicates by source partition and offset).
#[test]
fn c05_instances_join_leave_and_a_paused_one_is_fenced() {
    let case = case(
        "c05_instances_join_leave_and_a_paused_one_is_fenced",
        Duration::from_secs(300),
    );
    let app = App::new("f05", 6);
    let events = workload(45_000, 450, 505);
    let mut a = case.start(daemon(&app, "a"));
    a.wait_ready(Duration::from_secs(90));
    let feeder = feed(&app.input, raw(&events), 500, Duration::from_millis(250));
    std::thread::sleep(Duration::from_secs(2));
    let mut b = case.start(daemon(&app, "b"));
    std::thread::sleep(Duration::from_secs(3));
    let mut c = case.start(daemon(&app, "c"));
    wait_until(
        "all three instances own partitions",
        Duration::from_secs(90),
        || {
            [&a, &b, &c]
                .iter()
                .all(|d| owned(d).is_some_and(|o| !o.is_empty()))
        },
    );
    case.step(format!(
        "three instances share the partitions: a {:?}, b {:?}, c {:?}",
        owned(&a).unwrap_or_default(),
        owned(&b).unwrap_or_default(),
        owned(&c).unwrap_or_default()
    ));
    let b_pid = pid_of(&b);
    let b_had = owned(&b).unwrap_or_default();
    let b_log_before = b.log().len();
    signal(b_pid, libc::SIGSTOP);
    case.step(format!("SIGSTOP b (pid {b_pid}, owning {b_had:?}) for 9s"));
    std::thread::sleep(Duration::from_secs(9));
    // While b is stopped, a and c must have taken over b's partitions.
    let others: Vec<i32> = [&a, &c]
        .iter()
        .flat_map(|d| owned(d).unwrap_or_default())
        .map(|(p, _)| p)
        .collect();
    case.step(format!("before SIGCONT: a and c own {others:?}"));
    signal(b_pid, libc::SIGCONT);
    // The resumed instance must find itself fenced: its generation or producer epoch is
    // stale, so whatever it still had open is aborted, never committed.
    let evidence = fenced_evidence(&b.log_path, b_log_before, Duration::from_secs(30))
        .unwrap_or_else(|after| {
            panic!(
                "no sign in b's log that it was fenced after SIGCONT; log after the pause:\n{after}"
            )
        });
    case.step(format!("b resumed and was fenced: {evidence}"));
    std::thread::sleep(Duration::from_secs(3));
    let status = c.terminate(Duration::from_secs(45));
    assert!(
        status.success(),
        "c leaves cleanly: {status}; log:\n{}",
        log_tail(&c, 60)
    );
    case.step("c left (SIGTERM)");
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    assert!(
        alive(b_pid),
        "b exited after it was fenced instead of rejoining; log:\n{}",
        log_tail(&b, 80)
    );
    let status = b.terminate(Duration::from_secs(45));
    assert!(
        status.success(),
        "b leaves cleanly: {status}; log:\n{}",
        log_tail(&b, 80)
    );
    case.step("b left (SIGTERM)");
    wait_partitions_settled(&[&a], app.partitions, Duration::from_secs(90));
    check_everything(&case, &app, &events, &[], a.http_port);
}

/// What the read hammer saw.
#[derive(Debug, Default)]
struct Reads {
    by_status: BTreeMap<u16, usize>,
    redirects_followed: usize,
    unreachable: usize,
    wrong: Vec<String>,
}

/// Case 11: reads while a second instance joins and partitions move, and while a wiped
/// instance restores its stores. The load finished before, so every 200 must be the final
/// value; anything else must be 503 (restoring / unavailable) or a 307 to the owner.
#[test]
fn c11_reads_during_rebalance_and_restore() {
    let case = case(
        "c11_reads_during_rebalance_and_restore",
        Duration::from_secs(300),
    );
    let app = App::new("f11", 6);
    let events = workload(60_000, 12_000, 1111);
    let (expected, _) = model(&events);
    let mut a = case.start(daemon(&app, "a"));
    a.wait_ready(Duration::from_secs(90));
    produce_events(&app.input, &events);
    let got = await_committed(&app.output, events.len(), Duration::from_secs(180)).len();
    assert_eq!(got, events.len(), "load processed before the reads start");
    a.wait_ready(Duration::from_secs(60));
    case.step(format!(
        "{} events over {} keys processed by a",
        events.len(),
        expected.len()
    ));

    let expected = Arc::new(expected);
    let ports = Arc::new(Mutex::new(vec![a.http_port]));
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (expected, ports, stop) = (expected.clone(), ports.clone(), stop.clone());
        std::thread::spawn(move || {
            let keys: Vec<&String> = expected.keys().collect();
            let mut reads = Reads::default();
            let mut i = 0usize;
            let check = |reads: &mut Reads, key: &str, port: u16, status: u16, body: &str| {
                *reads.by_status.entry(status).or_default() += 1;
                match status {
                    200 => {
                        let want = expected[key];
                        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                        let ok = v["helloCount"].as_u64() == Some(want.count)
                            && v["helloTotalCount"].as_u64() == Some(want.total)
                            && v["mood"].as_str()
                                == Some(if want.angry { "ANGRY" } else { "HAPPY" });
                        if !ok {
                            reads
                                .wrong
                                .push(format!("{key} via {port}: 200 {body}, want {want:?}"));
                        }
                    }
                    503 | 307 => {}
                    _ => reads
                        .wrong
                        .push(format!("{key} via {port}: {status} {body}")),
                }
            };
            while !stop.load(Ordering::Relaxed) {
                let port_list = ports.lock().unwrap().clone();
                let port = port_list[i % port_list.len()];
                let key = keys[(i * 7919) % keys.len()];
                i += 1;
                let Ok((status, body)) = http_get(port, &format!("/v1/state/{key}")) else {
                    reads.unreachable += 1;
                    continue;
                };
                check(&mut reads, key, port, status, &body);
                if status == 307 {
                    // Follow the redirect once: the owner must answer right too.
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let location = v["location"].as_str().unwrap_or_default().to_owned();
                    let target = location
                        .strip_prefix("http://")
                        .and_then(|rest| rest.split_once('/'))
                        .and_then(|(host, _)| host.rsplit_once(':'))
                        .and_then(|(_, p)| p.parse::<u16>().ok());
                    match target {
                        Some(owner) => {
                            if let Ok((status, body)) = http_get(owner, &format!("/v1/state/{key}"))
                            {
                                reads.redirects_followed += 1;
                                check(&mut reads, key, owner, status, &body);
                            }
                        }
                        None => reads.wrong.push(format!(
                            "{key} via {port}: 307 without a usable location: {body}"
                        )),
                    }
                }
            }
            reads
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let mut b = case.start(daemon(&app, "b"));
    ports.lock().unwrap().push(b.http_port);
    case.step("b joins while reads run");
    wait_partitions_settled(&[&a, &b], app.partitions, Duration::from_secs(120));
    case.step(format!(
        "settled: a {:?}, b {:?}",
        owned(&a).unwrap_or_default(),
        owned(&b).unwrap_or_default()
    ));
    std::thread::sleep(Duration::from_secs(2));

    // b leaves, loses its disk, and comes back: it restores its partitions from scratch.
    let status = b.terminate(Duration::from_secs(45));
    assert!(status.success(), "b leaves cleanly: {status}");
    ports.lock().unwrap().retain(|p| *p != b.http_port);
    std::fs::remove_dir_all(app.state_dir("b")).expect("wipe b");
    case.step("b stopped and wiped");
    wait_partitions_settled(&[&a], app.partitions, Duration::from_secs(90));
    let mut b = case.start(daemon(&app, "b"));
    ports.lock().unwrap().push(b.http_port);
    let restore_seen = Instant::now();
    // Cooperative rebalancing first gives the new member nothing and moves partitions in a
    // second round: settled with b empty-handed is not yet the state under test.
    wait_until("b owns partitions again", Duration::from_secs(120), || {
        owned(&b).is_some_and(|o| !o.is_empty()) && partitions_settled(&[&a, &b], app.partitions)
    });
    let restored = b.metric("hello_streams_restore_total");
    case.step(format!(
        "wiped b restored {restored} records and settled after {:?}",
        restore_seen.elapsed()
    ));
    assert!(
        restored > 0.0,
        "the wiped instance restored from the changelog"
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let reads = hammer.join().expect("hammer thread");
    case.step(format!(
        "reads by status {:?}, {} redirects followed, {} unreachable, {} wrong",
        reads.by_status,
        reads.redirects_followed,
        reads.unreachable,
        reads.wrong.len()
    ));
    assert!(
        reads.wrong.is_empty(),
        "{} wrong answers during the rebalance/restore, e.g.:\n{}",
        reads.wrong.len(),
        reads
            .wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let ok = reads.by_status.get(&200).copied().unwrap_or(0);
    assert!(ok > 100, "the hammer got answers: {:?}", reads.by_status);
    case.verified(reads.by_status.values().sum::<usize>());

    let status = b.terminate(Duration::from_secs(45));
    assert!(status.success(), "b leaves cleanly: {status}");
    wait_partitions_settled(&[&a], app.partitions, Duration::from_secs(90));
    check_everything(&case, &app, &events, &[], a.http_port);
}

/// Case 17: instance a (fault hook `stall-before-commit:N:14000`,
/// `kafka.consumer.max.poll.interval.ms=7000`, which must stay allowed) stalls 14 s before
/// a commit with its transaction open, past the poll interval: the consumer leaves the
/// group, b takes a's partitions, and when a wakes up its transaction must not commit
/// (fenced by the group generation); a rejoins and takes partitions again. Exact checks.
#[test]
fn c17_stall_past_max_poll_interval() {
    let case = case("c17_stall_past_max_poll_interval", Duration::from_secs(240));
    let app = App::new("f17", 4);
    let events = workload(40_000, 400, 1717);
    let mut b = case.start(daemon(&app, "b"));
    b.wait_ready(Duration::from_secs(90));
    let mut a = start_hooked_with(
        &app,
        "a",
        "stall-before-commit:10:14000",
        &[
            "kafka.consumer.max.poll.interval.ms=7000",
            // Short, so the stall watchdog speaks within the 14 s stall.
            "app.stall_timeout_ms=4000",
        ],
    );
    case.watch(&a.log_path);
    if let Some(status) = a.wait_exit(Duration::from_secs(3)) {
        panic!(
            "a exited at start ({status}): is kafka.consumer.max.poll.interval.ms rejected? log:\n{}",
            tail(&a.log(), 40)
        );
    }
    wait_until(
        "a and b share the partitions",
        Duration::from_secs(90),
        || {
            owned_at(a.http_port).is_some_and(|o| !o.is_empty())
                && owned(&b).is_some_and(|o| !o.is_empty())
        },
    );
    let a_had = owned_at(a.http_port).unwrap_or_default();
    case.step(format!(
        "a {a_had:?} (stalls before its 10th commit), b {:?}",
        owned(&b).unwrap_or_default()
    ));
    let feeder = feed(&app.input, raw(&events), 300, Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.log().contains("fault hook: stalling") {
        assert!(
            Instant::now() < deadline,
            "a's stall (before its 10th commit) did not begin within 60 s of load: a {}; b {}",
            progress_at(a.http_port),
            progress_at(b.http_port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stall = Instant::now();
    let a_log_before = a.log().len();
    case.step("a stalls 14 s before a commit, its transaction open");
    // The watchdog outside the stream thread says so: log, metric, not ready.
    wait_until(
        "a reports its stalled stream thread (log, metric, /readyz 503)",
        Duration::from_secs(10),
        || {
            a.log().contains("stream thread makes no progress")
                && metric_at(a.http_port, "hello_streams_stalled_threads") == 1.0
                && http_get(a.http_port, "/readyz").is_ok_and(|(status, _)| status == 503)
        },
    );
    case.step(format!("a reports the stall {:?} into it", stall.elapsed()));
    wait_until(
        "b takes all partitions once a's poll interval ran out",
        Duration::from_secs(30),
        || owned(&b).is_some_and(|o| o.len() == app.partitions as usize),
    );
    case.step(format!(
        "b owns {:?} {:?} into the stall",
        owned(&b).unwrap_or_default(),
        stall.elapsed()
    ));
    let evidence = fenced_evidence(&a.log_path, a_log_before, Duration::from_secs(40))
        .unwrap_or_else(|after| {
            panic!("no sign in a's log that its stale transaction was fenced:\n{after}")
        });
    case.step(format!(
        "a woke up {:?} after the stall began and was fenced: {evidence}",
        stall.elapsed()
    ));
    assert!(
        alive(a.pid()),
        "a exited after it was fenced instead of rejoining; log:\n{}",
        tail(&a.log(), 80)
    );
    // Rejoined: a and b split the partitions between them again, each one once, all active
    // (a's status right after the fence may still list its old partitions).
    wait_until(
        "a rejoins and the two split the partitions",
        Duration::from_secs(60),
        || {
            let (Some(mine), Some(theirs)) = (owned_at(a.http_port), owned(&b)) else {
                return false;
            };
            let mut all: Vec<i32> = mine.iter().chain(&theirs).map(|(p, _)| *p).collect();
            all.sort_unstable();
            !mine.is_empty()
                && all == (0..app.partitions).collect::<Vec<_>>()
                && mine.iter().chain(&theirs).all(|(_, s)| s == "active")
        },
    );
    case.step(format!(
        "a rejoined: a {:?}, b {:?}",
        owned_at(a.http_port).unwrap_or_default(),
        owned(&b).unwrap_or_default()
    ));
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    let status = b.terminate(Duration::from_secs(45));
    assert!(status.success(), "b leaves cleanly: {status}");
    wait_until(
        "a owns every partition, active",
        Duration::from_secs(90),
        || {
            owned_at(a.http_port).is_some_and(|o| {
                o.len() == app.partitions as usize && o.iter().all(|(_, s)| s == "active")
            })
        },
    );
    check_everything(&case, &app, &events, &[], a.http_port);
}
