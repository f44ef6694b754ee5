//! Fault points for the fault suite, armed by `HELLO_STREAMS_FAULT` and compiled only with
//! the `fault-hooks` feature. Each kills or stalls the process at a moment no signal sent from
//! outside can hit reliably.
//!
//! - `crash-before-commit:N`: abort (like kill -9) before the N-th commit, after its records
//!   were produced.
//! - `crash-after-changelog:N`: at the N-th applied record, deliver what was produced so far
//!   (the record's changelog update included) and abort before its output record is sent:
//!   the window in which at-least-once used to lose output.
//! - `stall-before-commit:N:MS`: sleep MS milliseconds on the stream thread before the N-th
//!   commit (processing stalls past `max.poll.interval.ms`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static COMMITS: AtomicU64 = AtomicU64::new(0);
static APPLIED: AtomicU64 = AtomicU64::new(0);

fn armed(name: &str) -> Option<Vec<u64>> {
    let spec = std::env::var("HELLO_STREAMS_FAULT").ok()?;
    let args = spec.strip_prefix(name)?.strip_prefix(':')?;
    args.split(':').map(|a| a.parse().ok()).collect()
}

pub fn before_commit() {
    let n = COMMITS.fetch_add(1, Ordering::Relaxed) + 1;
    if armed("crash-before-commit").is_some_and(|a| a.first() == Some(&n)) {
        eprintln!("fault hook: crashing before commit {n}");
        std::process::abort();
    }
    if let Some(args) = armed("stall-before-commit") {
        if args.first() == Some(&n) {
            let ms = args.get(1).copied().unwrap_or(0);
            eprintln!("fault hook: stalling {ms} ms before commit {n}");
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

/// Called after a record's changelog update was sent and before its output record is;
/// `deliver` waits until everything produced so far is acknowledged.
pub fn after_changelog(deliver: impl FnOnce()) {
    let Some(args) = armed("crash-after-changelog") else {
        return;
    };
    let n = APPLIED.fetch_add(1, Ordering::Relaxed) + 1;
    if args.first() == Some(&n) {
        deliver();
        eprintln!("fault hook: crashing after the changelog update of record {n}");
        std::process::abort();
    }
}
