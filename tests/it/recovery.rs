//! Crashes, restarts and wiped state: nothing lost, nothing counted twice.

use std::time::Duration;

use crate::common::*;

#[test]
fn kill_9_during_a_run_loses_and_duplicates_nothing() {
    let app = App::new("kill9", 3);
    let events = workload(30_000, 200, 3);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    // Feed in slices and kill the daemon between them while it is still busy.
    let slices: Vec<_> = events.chunks(events.len() / 4 + 1).collect();
    for (i, slice) in slices.iter().enumerate() {
        produce_events(&app.input, slice);
        if i < 3 {
            std::thread::sleep(Duration::from_millis(300 + 200 * i as u64));
            daemon.kill9();
            daemon = app.daemon("a").start();
            daemon.wait_ready(Duration::from_secs(60));
        }
    }
    let verified = verify(&app, &events, Duration::from_secs(120));
    println!("verified {verified} records after 3 kill -9 restarts");
    verify_queries(daemon.http_port, &events);
    let windows = verify_windows(&app, daemon.http_port);
    println!("{windows} windows exact");
    // No transaction left open: both isolation levels end at the same place.
    let committed_end = read_topic(&app.output, "read_committed").len();
    let uncommitted = read_topic(&app.output, "read_uncommitted").len();
    assert!(
        uncommitted >= committed_end,
        "aborted records are only visible uncommitted"
    );
}

#[test]
fn a_wiped_state_directory_is_rebuilt_from_the_changelog() {
    let app = App::new("wipe", 3);
    let events = workload(5_000, 100, 5);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    produce_events(&app.input, &events);
    verify(&app, &events, Duration::from_secs(90));
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success());
    std::fs::remove_dir_all(app.state_dir("a")).unwrap();
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    verify_queries(daemon.http_port, &events);
    verify_windows(&app, daemon.http_port);
    let restored = daemon.metric("hello_streams_restore_total");
    assert!(
        restored >= 100.0,
        "state came from the changelog: {restored} records restored"
    );
    // The output was not written again by the restore.
    assert_eq!(
        read_topic(&app.output, "read_committed").len(),
        events.len()
    );
}

#[test]
fn sigterm_commits_and_a_restart_replays_nothing() {
    let app = App::new("sigterm", 2);
    let events = workload(4_000, 50, 9);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    produce_events(&app.input, &events);
    verify(&app, &events, Duration::from_secs(90));
    let started = std::time::Instant::now();
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit 0 on SIGTERM: {status}");
    println!("SIGTERM to exit: {:?}", started.elapsed());
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    assert_eq!(
        daemon.metric("hello_streams_restore_total"),
        0.0,
        "log:\n{}",
        daemon.log()
    );
    verify_queries(daemon.http_port, &events);
}

#[test]
fn the_drill_rebuilds_every_store_with_no_mismatch() {
    let app = App::new("drill", 3);
    let events = workload(6_000, 300, 17);
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    produce_events(&app.input, &events);
    verify(&app, &events, Duration::from_secs(90));
    // While the instance runs: rebuild into scratch, the live store untouched.
    let scratch = tempfile::tempdir().unwrap();
    let report = drill(&app, "a", &["--scratch", scratch.path().to_str().unwrap()]);
    println!("{report}");
    let status = daemon.terminate(Duration::from_secs(30));
    assert!(status.success());
    // Stopped: wipe and replay in place, then the instance serves the same state.
    println!("{}", drill(&app, "a", &[]));
    let mut daemon = app.daemon("a").start();
    daemon.wait_ready(Duration::from_secs(60));
    verify_queries(daemon.http_port, &events);
}
