//! `app.processing_guarantee = "at_least_once"` under crashes: duplicates are allowed, lost
//! output is not.

use std::time::Duration;

use crate::common::*;
use crate::support::*;

const AT_LEAST_ONCE: &str = "app.processing_guarantee=\"at_least_once\"";

/// Case 14: at least once, with two crashes forced by the fault hook
/// `crash-after-changelog:N` (the N-th applied record's changelog update is delivered, the
/// process aborts before its output record is sent: the window in which at-least-once lost
/// output) and three kill -9 cycles, all under load. Every valid event has at least one
/// output record; duplicates are counted and must say what the first record said; the
/// changelog's last values and the queries are exact.
#[test]
fn c14_at_least_once_kill_cycles_lose_nothing() {
    let case = case(
        "c14_at_least_once_kill_cycles_lose_nothing",
        Duration::from_secs(300),
    );
    let app = App::new("f14", 6);
    let events = workload(60_000, 500, 1414);
    let mut d = case.start(daemon(&app, "a").set(AT_LEAST_ONCE));
    d.wait_ready(Duration::from_secs(90));
    // ~2,000 events/s for ~30 s: every crash below lands under load.
    let feeder = feed(&app.input, raw(&events), 200, Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(2));
    d.kill9();
    case.step("kill -9 #1 under load");
    for n in [400u64, 1_500] {
        let spec = format!("crash-after-changelog:{n}");
        let mut h = start_hooked_with(&app, "a", &spec, &[AT_LEAST_ONCE]);
        case.watch(&h.log_path);
        let Some(status) = h.wait_exit(Duration::from_secs(60)) else {
            panic!(
                "the daemon with {spec} did not crash within 60 s (feeder running: {}); log:\n{}",
                !feeder.is_finished(),
                tail(&h.log(), 60)
            );
        };
        let log = h.log();
        assert!(
            log.contains(&format!(
                "fault hook: crashing after the changelog update of record {n}"
            )),
            "the daemon exited ({status}), but not through the fault hook; log:\n{}",
            tail(&log, 60)
        );
        case.step(format!(
            "{spec}: crashed ({status}) after the changelog update, before the output record"
        ));
    }
    d = case.start(daemon(&app, "a").set(AT_LEAST_ONCE));
    d.wait_ready(Duration::from_secs(90));
    for round in 2..=4u64 {
        std::thread::sleep(Duration::from_millis(1_000 + 500 * round));
        let taken = d.metric("hello_streams_process_total");
        case.step(format!(
            "kill -9 #{round}: {taken} records taken by this incarnation, feeder running: {}",
            !feeder.is_finished()
        ));
        d.kill9();
        d = case.start(daemon(&app, "a").set(AT_LEAST_ONCE));
        d.wait_ready(Duration::from_secs(90));
    }
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    let dupes = check_everything_with(
        &case,
        &app,
        &events,
        &[],
        d.http_port,
        Duplicates::AllowedIfEqual,
    );
    case.step(format!(
        "at least once: nothing lost, {dupes} duplicate output records (each equal to the first)"
    ));
}
