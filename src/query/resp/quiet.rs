//! Noticing that a client went quiet: Redis' idle `timeout`, and giving a quiet connection's
//! buffers back, so thousands of idle clients hold no buffer memory.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, Sleep};

/// A connection quiet for this long gives its buffers back: idle clients then cost a task
/// and a socket, not 32 KiB each.
const IDLE_TRIM: Duration = Duration::from_secs(1);

/// Notices a quiet connection without a timer per wait: one timer per connection, reset
/// only when it fires, so a busy connection pays for it about once per [`IDLE_TRIM`].
pub(super) struct Quiet {
    timer: Pin<Box<Sleep>>,
    last_input: Instant,
    idle_timeout: Option<Duration>,
}

impl Quiet {
    pub(super) fn new(idle_timeout: Option<Duration>) -> Self {
        let first = idle_timeout.map_or(IDLE_TRIM, |t| t.min(IDLE_TRIM));
        Quiet {
            timer: Box::pin(tokio::time::sleep(first)),
            last_input: Instant::now(),
            idle_timeout,
        }
    }

    pub(super) fn heard(&mut self) {
        self.last_input = Instant::now();
    }

    /// Reads what the client sends next into `input`: the bytes read (0 when it closed), or
    /// `None` when it stayed quiet past the idle timeout. A connection quiet for
    /// [`IDLE_TRIM`] gives its (empty) buffers back.
    pub(super) async fn wait<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        input: &mut Vec<u8>,
        output: &mut Vec<u8>,
    ) -> io::Result<Option<usize>> {
        loop {
            // A read, not a readiness wait: TLS may hold decrypted bytes the socket no longer
            // signals. Dropping the read when the timer fires loses nothing.
            let read = tokio::select! {
                biased;
                read = stream.read_buf(input) => Some(read),
                () = self.timer.as_mut() => None,
            };
            if let Some(read) = read {
                return read.map(Some);
            }
            let quiet = self.last_input.elapsed();
            if self.idle_timeout.is_some_and(|t| quiet >= t) {
                return Ok(None);
            }
            if quiet >= IDLE_TRIM {
                if input.is_empty() {
                    *input = Vec::new();
                }
                *output = Vec::new();
            }
            let far = self.last_input + Duration::from_secs(365 * 86_400);
            let mut next = self.idle_timeout.map_or(far, |t| self.last_input + t);
            if quiet < IDLE_TRIM {
                next = next.min(self.last_input + IDLE_TRIM);
            }
            self.timer.as_mut().reset(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_server::{connect, start, talk, until_closed};
    use crate::query::resp::RespLimits;

    #[tokio::test]
    async fn idle_clients_are_disconnected() {
        let server = start(RespLimits {
            idle_timeout: Some(Duration::from_millis(300)),
            ..RespLimits::default()
        })
        .await;
        let mut client = connect(&server).await;
        talk(&mut client, &[("PING", "+PONG\r\n")]).await;
        let started = std::time::Instant::now();
        assert_eq!(until_closed(&mut client).await, b"");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
