//! Broker failures on the separate 3-node cluster (replication factor 3, min ISR 2): one node
//! killed and restarted during load, and the whole cluster down for longer than the
//! transaction timeout. The daemon is never restarted by the test: it must ride it out.

use std::time::Duration;

use crate::common::*;
use crate::support::*;

/// Case 3: SIGKILL one broker during load, start it again with its data; then the same with
/// another broker.
#[test]
fn c03_broker_killed_and_restarted_during_load() {
    let case = case(
        "c03_broker_killed_and_restarted_during_load",
        Duration::from_secs(300),
    );
    let _back = BrokersBack;
    let app = App::new("f03", 6);
    let events = workload(40_000, 400, 303);
    let mut d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(90));
    let pid = pid_of(&d);
    let feeder = feed(&app.input, raw(&events), 500, Duration::from_millis(250));
    for node in ["1", "2"] {
        std::thread::sleep(Duration::from_secs(3));
        local_kafka(&["kill-broker", node]);
        case.step(format!(
            "killed broker {node} (feeder running: {})",
            !feeder.is_finished()
        ));
        std::thread::sleep(Duration::from_secs(5));
        assert!(
            alive(pid),
            "daemon died with broker {node} down; log:\n{}",
            log_tail(&d, 80)
        );
        local_kafka(&["start-broker", node]);
        case.step(format!("broker {node} is back"));
    }
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    rode_it_out(&case, &mut d, pid, &app, &events, Duration::from_secs(60));
}

/// Case 4: all three brokers down (SIGKILL) for longer than the transaction timeout
/// (`kafka.transaction_timeout_ms=5000`), during load; then started again with their data.
#[test]
fn c04_all_brokers_down_longer_than_txn_timeout() {
    let case = case(
        "c04_all_brokers_down_longer_than_txn_timeout",
        Duration::from_secs(300),
    );
    let _back = BrokersBack;
    let app = App::new("f04", 6);
    let events = workload(30_000, 300, 404);
    let mut d = case.start(daemon(&app, "a").set("kafka.transaction_timeout_ms=5000"));
    d.wait_ready(Duration::from_secs(90));
    let pid = pid_of(&d);
    let feeder = feed(&app.input, raw(&events), 500, Duration::from_millis(250));
    std::thread::sleep(Duration::from_secs(4));
    for node in ["1", "2", "3"] {
        local_kafka(&["kill-broker", node]);
    }
    let down = std::time::Instant::now();
    case.step(format!(
        "all brokers killed (feeder running: {}); staying down 12s > transaction timeout 5s",
        !feeder.is_finished()
    ));
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        alive(pid),
        "the daemon exited while the brokers were down; log:\n{}",
        log_tail(&d, 120)
    );
    local_kafka(&["start", "--keep-data"]);
    case.step(format!("cluster back after {:?} down", down.elapsed()));
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    rode_it_out(&case, &mut d, pid, &app, &events, Duration::from_secs(90));
}

/// The end of both cases: the daemon that lived through the outage is still the same
/// process, becomes ready, and its results pass every check.
fn rode_it_out(
    case: &Case,
    d: &mut Daemon,
    pid: i32,
    app: &App,
    events: &[(String, String)],
    ready_within: Duration,
) {
    assert!(
        alive(pid),
        "the daemon exited during the broker outage; log:\n{}",
        log_tail(d, 150)
    );
    d.wait_ready(ready_within);
    check_everything(case, app, events, &[], d.http_port);
    assert!(alive(pid), "the daemon is still the same process");
    case.step(format!(
        "daemon rode it out: {} aborts, {} producers recreated",
        metric_or_nan(d, "hello_streams_abort_total"),
        metric_or_nan(d, "hello_streams_producer_recreated_total")
    ));
}
