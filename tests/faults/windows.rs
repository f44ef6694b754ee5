//! The window store under crashes: event-time windows over many minutes, late records among
//! them, kill -9 while they are folded and a wiped state directory, checked exactly against
//! the window model (`common::verify_windows`) as well as everything else.

use std::time::Duration;

use rdkafka::producer::{BaseRecord, Producer as _};

use crate::common::*;
use crate::support::*;

/// A minute boundary well in the past: the windows depend on the records alone.
const T0: i64 = 1_700_000_040_000;

/// The workload with event times: 40 ms apart (a window holds 1,500 events), and every 50th
/// record 90 s older than its neighbours, so it is late once stream time is a window past it.
fn timed(events: &[(String, String)]) -> Vec<(String, String, i64)> {
    events
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let mut at = T0 + 40 * i as i64;
            if i % 50 == 49 {
                at -= 90_000;
            }
            (k.clone(), v.clone(), at)
        })
        .collect()
}

fn feed_timed(
    topic: &str,
    records: Vec<(String, String, i64)>,
    chunk: usize,
    pause: Duration,
) -> std::thread::JoinHandle<usize> {
    let topic = topic.to_owned();
    std::thread::spawn(move || {
        let producer = producer();
        for (i, slice) in records.chunks(chunk).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            for (key, value, at) in slice {
                let mut record = BaseRecord::to(&topic)
                    .key(key.as_bytes())
                    .payload(value.as_bytes())
                    .timestamp(*at);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, returned)) => {
                            record = returned;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            }
        }
        producer
            .flush(Duration::from_secs(240))
            .expect("feeder: every record acknowledged");
        records.len()
    })
}

/// Case 18: 30k events over 13 minutes of event time and 200 keys, one in fifty late; kill -9
/// twice while they are folded, then a restart from a wiped state directory.
#[test]
fn c18_windows_exact_through_kill9_and_a_wiped_store() {
    let case = case(
        "c18_windows_exact_through_kill9_and_a_wiped_store",
        Duration::from_secs(300),
    );
    let app = App::new("f18", 6);
    let events = workload(30_000, 200, 1_818);
    let mut d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(90));
    let feeder = feed_timed(
        &app.input,
        timed(&events),
        1_000,
        Duration::from_millis(400),
    );
    for round in 1..=2u64 {
        std::thread::sleep(Duration::from_millis(1_500 + 1_000 * round));
        case.step(format!(
            "kill -9 #{round}: {} records taken by this incarnation",
            d.metric("hello_streams_process_total")
        ));
        d.kill9();
        d = case.start(daemon(&app, "a"));
        d.wait_ready(Duration::from_secs(90));
    }
    std::thread::sleep(Duration::from_secs(2));
    d.kill9();
    std::fs::remove_dir_all(app.state_dir("a")).expect("wipe the state directory");
    case.step("kill -9 #3 and the state directory wiped");
    d = case.start(daemon(&app, "a"));
    d.wait_ready(Duration::from_secs(120));
    let fed = join_feeder(feeder);
    case.step(format!("fed {fed} events"));
    check_everything(&case, &app, &events, &[], d.http_port);
    let late = d.metric("hello_streams_late_records_total");
    case.step(format!(
        "{late} late records counted by the last incarnation"
    ));
}
