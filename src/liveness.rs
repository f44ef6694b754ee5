//! Whether the stream threads make progress, watched from outside them.
//!
//! A stream thread that blocks in a broker call or loops without committing cannot report
//! itself, so each thread only records what it is doing and when it last made progress (a
//! commit, or a moment with nothing to do); the watchdog thread compares that with the clock
//! and says so in the log, in `hello_streams_stalled_threads` and through `/readyz`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// What a stream thread is doing, for the stall report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Activity {
    Polling = 0,
    Committing = 1,
    Aborting = 2,
    /// Recreating the producer and restoring after a failed or unknown commit.
    Recovering = 3,
    /// Seeking back to the committed input offsets.
    Rewinding = 4,
    Rebalancing = 5,
}

impl Activity {
    fn from_u8(v: u8) -> Activity {
        match v {
            1 => Activity::Committing,
            2 => Activity::Aborting,
            3 => Activity::Recovering,
            4 => Activity::Rewinding,
            5 => Activity::Rebalancing,
            _ => Activity::Polling,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Polling => "polling input",
            Activity::Committing => "committing a transaction",
            Activity::Aborting => "aborting a transaction",
            Activity::Recovering => "recreating the producer and restoring stores",
            Activity::Rewinding => "seeking to the committed input offsets",
            Activity::Rebalancing => "handling a rebalance",
        }
    }
}

#[derive(Debug)]
struct Beat {
    /// Milliseconds since `Liveness::epoch` of the last progress.
    progress_ms: AtomicI64,
    activity: AtomicU8,
    stalled: AtomicBool,
}

/// Shared by the stream threads (writers) and the watchdog (reader).
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    threads: Box<[Beat]>,
    /// No progress for this long while there is work: stalled.
    bound: Duration,
}

impl Liveness {
    pub fn new(threads: usize, bound: Duration) -> Self {
        Liveness {
            epoch: Instant::now(),
            threads: (0..threads.max(1))
                .map(|_| Beat {
                    progress_ms: AtomicI64::new(0),
                    activity: AtomicU8::new(Activity::Polling as u8),
                    stalled: AtomicBool::new(false),
                })
                .collect(),
            bound,
        }
    }

    fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// Thread `thread` committed, or found nothing to do.
    pub fn progressed(&self, thread: usize) {
        if let Some(beat) = self.threads.get(thread) {
            beat.progress_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    pub fn doing(&self, thread: usize, activity: Activity) {
        if let Some(beat) = self.threads.get(thread) {
            beat.activity.store(activity as u8, Ordering::Relaxed);
        }
    }

    pub fn any_stalled(&self) -> bool {
        self.threads
            .iter()
            .any(|b| b.stalled.load(Ordering::Relaxed))
    }

    /// One look at every thread: logs changes, returns how many are stalled.
    fn check(&self) -> u64 {
        let now = self.now_ms();
        let mut stalled = 0;
        for (thread, beat) in self.threads.iter().enumerate() {
            let quiet = Duration::from_millis(
                (now - beat.progress_ms.load(Ordering::Relaxed)).max(0) as u64,
            );
            let activity = Activity::from_u8(beat.activity.load(Ordering::Relaxed));
            let is_stalled = quiet >= self.bound;
            let was_stalled = beat.stalled.swap(is_stalled, Ordering::Relaxed);
            if is_stalled {
                stalled += 1;
                if !was_stalled {
                    tracing::warn!(
                        thread,
                        seconds = quiet.as_secs(),
                        activity = activity.as_str(),
                        "stream thread makes no progress: it has input or an open transaction but committed nothing; not ready until it does"
                    );
                }
            } else if was_stalled {
                tracing::info!(thread, "stream thread makes progress again");
            }
        }
        stalled
    }
}

/// Checks every second until shutdown; ends within a second of it.
pub fn spawn_watchdog(
    liveness: Arc<Liveness>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("stall-watchdog".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                let stalled = liveness.check();
                metrics.stalled_threads.store(stalled, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
                for _ in 0..3 {
                    if shutdown.is_triggered() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_without_progress_past_the_bound_is_stalled_until_it_progresses() {
        let liveness = Liveness::new(2, Duration::from_millis(50));
        liveness.progressed(0);
        liveness.progressed(1);
        assert_eq!(liveness.check(), 0);
        std::thread::sleep(Duration::from_millis(80));
        liveness.progressed(1);
        liveness.doing(0, Activity::Committing);
        assert_eq!(liveness.check(), 1);
        assert!(liveness.any_stalled());
        liveness.progressed(0);
        assert_eq!(liveness.check(), 0);
        assert!(!liveness.any_stalled());
    }
}
