//! Overlapping faults around a dead or stopped owner's open transaction: the survivor of a
//! kill -9 restarts inside the dead instance's transaction timeout (issue 14's headline
//! scenario), and a partition is handed to a third instance while a SIGSTOPped owner's
//! transaction is still open.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

/// Case 12, default `kafka.transaction_timeout_ms` (10 s).
#[test]
fn c12_survivor_restarts_inside_dead_txn_timeout() {
    survivor_restarts_inside_dead_txn_timeout(
        "c12_survivor_restarts_inside_dead_txn_timeout",
        None,
    );
}

/// Case 12 with `kafka.transaction_timeout_ms=60000`: the dead transaction stays open for
/// the whole restart.
#[test]
fn c12_survivor_restarts_inside_dead_txn_timeout_60s() {
    survivor_restarts_inside_dead_txn_timeout(
        "c12_survivor_restarts_inside_dead_txn_timeout_60s",
        Some(60_000),
    );
}

/// Two instances share 4 partitions while ~4,000 events/s arrive; a dies mid-load with its
/// transaction open (its open transaction stays until the transaction timeout); b takes a's
/// partitions after the session timeout (6 s), commits for a moment, and is restarted
/// (SIGTERM, start) while a's transaction is still open. The load finishes and everything
/// must be exact: a restore that stops at the last stable offset wipes b's correct stores
/// ("checkpoint is ahead of the changelog") and loses b's committed updates.
///
/// a dies through the hook `crash-before-commit:12` (abort, as kill -9, after the records
/// of its 12th transaction were produced and before their offsets and commit are sent): a
/// plain kill -9 under load often lands while a commit is in flight, which the coordinator
/// then completes, leaving no transaction open (seen in the first runs of this case).
fn survivor_restarts_inside_dead_txn_timeout(name: &str, txn_timeout_ms: Option<u64>) {
    let case = case(name, Duration::from_secs(300));
    let app = App::new("f12", 4);
    let events = workload(80_000, 1_000, 1212);
    let txn_timeout = Duration::from_millis(txn_timeout_ms.unwrap_or(10_000));
    let timeout_set = txn_timeout_ms.map(|ms| format!("kafka.transaction_timeout_ms={ms}"));
    let sets: Vec<&str> = timeout_set.iter().map(String::as_str).collect();
    let instance = |name: &str| {
        sets.iter()
            .fold(daemon(&app, name), |builder, set| builder.set(set))
    };
    let mut b = case.start(instance("b"));
    b.wait_ready(Duration::from_secs(90));
    let mut a = start_hooked_with(&app, "a", "crash-before-commit:12", &sets);
    case.watch(&a.log_path);
    wait_until(
        "a and b share the partitions",
        Duration::from_secs(90),
        || {
            let active = |o: Option<Vec<(i32, String)>>| {
                o.is_some_and(|o| o.len() == 2 && o.iter().all(|(_, s)| s == "active"))
            };
            active(owned_at(a.http_port)) && active(owned(&b))
        },
    );
    let a_had = owned_at(a.http_port).unwrap_or_default();
    case.step(format!(
        "a {a_had:?}, b {:?}; feeding ~4,000 events/s",
        owned(&b).unwrap_or_default()
    ));
    let feeder = feed(&app.input, raw(&events), 400, Duration::from_millis(100));
    // Generous: on a loaded 2-core machine a commit on the 3-node cluster can take a second.
    let status = a.wait_exit(Duration::from_secs(150)).unwrap_or_else(|| {
        panic!(
            "a did not crash before its 12th commit within 150 s: {}; log:\n{}",
            progress_at(a.http_port),
            tail(&a.log(), 40)
        )
    });
    let killed = Instant::now();
    assert!(
        a.log().contains("fault hook: crashing before commit 12"),
        "a exited ({status}), but not through the fault hook; log:\n{}",
        tail(&a.log(), 40)
    );
    case.step(format!(
        "a died before its 12th commit ({status}); open on the changelog: {:?} \
         (partition, LSO, high watermark); stays open up to {txn_timeout:?}",
        open_transactions(&app.changelog())
    ));
    wait_until(
        "b owns all partitions after the session timeout",
        Duration::from_secs(60),
        || owned(&b).is_some_and(|o| o.len() == app.partitions as usize),
    );
    case.step(format!(
        "b owns {:?} {:?} after the crash",
        owned(&b).unwrap_or_default(),
        killed.elapsed()
    ));
    std::thread::sleep(Duration::from_millis(1_500));
    let commits = b.metric("hello_streams_commit_total");
    let status = b.terminate(Duration::from_secs(45));
    assert!(
        status.success(),
        "b exits 0 on SIGTERM: {status}; log:\n{}",
        log_tail(&b, 60)
    );
    let open = open_transactions(&app.changelog());
    let mut b = case.start(instance("b"));
    let restarted = killed.elapsed();
    case.step(format!(
        "b restarted {restarted:?} after the crash ({commits} commits before SIGTERM), {} the \
         dead transaction's timeout; open on the changelog: {open:?}",
        if open.is_empty() {
            "but NOT inside"
        } else {
            "inside"
        }
    ));
    b.wait_ready(txn_timeout + Duration::from_secs(90));
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    wait_partitions_settled(&[&b], app.partitions, Duration::from_secs(120));
    let log = plain(&b.log());
    let rebuilt = log
        .lines()
        .filter(|l| l.contains("rebuilding"))
        .collect::<Vec<_>>();
    case.step(format!(
        "restarted b: {} stores rebuilt{}",
        b.metric("hello_streams_stores_rebuilt_total"),
        rebuilt
            .first()
            .map(|l| format!(", e.g.: {l}"))
            .unwrap_or_default()
    ));
    check_everything(&case, &app, &events, &[], b.http_port);
    assert!(
        rebuilt.is_empty(),
        "a correct store was wiped and rebuilt: {rebuilt:?}"
    );
}

/// Case 13: three instances over 6 partitions (transaction timeout 30 s); b is SIGSTOPped
/// mid-load with its transaction open; its partitions go to a and c after the session
/// timeout; a fourth instance d joins and takes partitions while b's transaction is still
/// open (a restore that stops at the last stable offset misses what a and c committed after
/// it); then b is resumed: it must find itself fenced (abort, rejoin) or exit cleanly, and
/// everything is exact.
///
/// The SIGSTOP lands inside the hook `stall-before-commit:10:12000` (b's 10th transaction
/// produced, its offsets and commit not sent), so the transaction is surely open; a SIGSTOP
/// at a random moment often lands during a commit, which the coordinator completes. The
/// stall is over when b is resumed, so b goes straight on to commit with its old generation.
#[test]
fn c13_handoff_while_stopped_owner_txn_open() {
    let case = case(
        "c13_handoff_while_stopped_owner_txn_open",
        Duration::from_secs(300),
    );
    let app = App::new("f13", 6);
    let events = workload(60_000, 600, 1313);
    let txn_timeout = Duration::from_secs(30);
    let instance = |name: &str| daemon(&app, name).set("kafka.transaction_timeout_ms=30000");
    let mut a = case.start(instance("a"));
    a.wait_ready(Duration::from_secs(90));
    let b = start_hooked_with(
        &app,
        "b",
        "stall-before-commit:10:12000",
        &["kafka.transaction_timeout_ms=30000"],
    );
    case.watch(&b.log_path);
    let c = case.start(instance("c"));
    wait_until(
        "a, b and c share the partitions",
        Duration::from_secs(90),
        || {
            [a.http_port, b.http_port, c.http_port]
                .iter()
                .all(|p| owned_at(*p).is_some_and(|o| o.len() == 2))
        },
    );
    let feeder = feed(&app.input, raw(&events), 300, Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(150);
    while !b.log().contains("fault hook: stalling") {
        assert!(
            Instant::now() < deadline,
            "b's stall (before its 10th commit) did not begin within 150 s of load: b {}; a {}; \
             c {}",
            progress_at(b.http_port),
            progress_at(a.http_port),
            progress_at(c.http_port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let b_pid = b.pid();
    let b_had = owned_at(b.http_port).unwrap_or_default();
    let b_log_before = b.log().len();
    signal(b_pid, libc::SIGSTOP);
    let stopped = Instant::now();
    case.step(format!(
        "SIGSTOP b (pid {b_pid}, owning {b_had:?}) mid-load, its transaction open: {:?} \
         (partition, LSO, high watermark)",
        open_transactions(&app.changelog())
    ));
    wait_until(
        "a and c own all partitions after the session timeout",
        Duration::from_secs(60),
        || {
            let n: usize = [&a, &c]
                .iter()
                .map(|d| owned(d).map_or(0, |o| o.len()))
                .sum();
            n == app.partitions as usize
        },
    );
    case.step(format!(
        "{:?} after SIGSTOP: a {:?}, c {:?}",
        stopped.elapsed(),
        owned(&a).unwrap_or_default(),
        owned(&c).unwrap_or_default()
    ));
    std::thread::sleep(Duration::from_secs(1));
    let d = case.start(instance("d"));
    wait_until(
        "d takes partitions from a and c",
        Duration::from_secs(60),
        || owned(&d).is_some_and(|o| !o.is_empty()),
    );
    let moved = owned(&d).unwrap_or_default();
    let since = stopped.elapsed();
    case.step(format!(
        "d took {moved:?} {since:?} after SIGSTOP ({} b's transaction timeout); b had {b_had:?}",
        if since < txn_timeout {
            "inside"
        } else {
            "NOT inside"
        }
    ));
    std::thread::sleep(Duration::from_secs(2));
    signal(b_pid, libc::SIGCONT);
    case.step(format!("SIGCONT b {:?} after SIGSTOP", stopped.elapsed()));
    let mut b = b;
    match fenced_evidence(&b.log_path, b_log_before, Duration::from_secs(30)) {
        Ok(line) => {
            case.step(format!("b resumed and found itself fenced: {line}"));
            assert!(
                alive(b_pid),
                "b exited after it was fenced; log:\n{}",
                tail(&b.log(), 80)
            );
        }
        Err(after) => {
            let status = b.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
                panic!(
                    "b neither shows it was fenced nor exited after SIGCONT; log after the \
                     pause:\n{}",
                    tail(&after, 80)
                )
            });
            case.step(format!("b exited after SIGCONT ({status})"));
            assert!(
                status.success(),
                "b exits cleanly after SIGCONT: {status}; log after the pause:\n{}",
                tail(&after, 80)
            );
        }
    }
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    // b (the hooked binary, no Daemon handle) leaves; the other three settle.
    if alive(b_pid) {
        signal(b_pid, libc::SIGTERM);
        let status = b.wait_exit(Duration::from_secs(45));
        assert!(
            status.is_some_and(|s| s.success()),
            "b leaves cleanly on SIGTERM: {status:?}; log:\n{}",
            tail(&b.log(), 80)
        );
        case.step("b left (SIGTERM)");
    }
    wait_partitions_settled(&[&a, &c, &d], app.partitions, Duration::from_secs(120));
    // The queries are checked on one instance that owns everything (the others would
    // answer with redirects): c and d leave.
    let (mut c, mut d) = (c, d);
    for (name, daemon) in [("c", &mut c), ("d", &mut d)] {
        let status = daemon.terminate(Duration::from_secs(45));
        assert!(status.success(), "{name} leaves cleanly: {status}");
    }
    wait_partitions_settled(&[&a], app.partitions, Duration::from_secs(120));
    check_everything(&case, &app, &events, &[], a.http_port);
}
