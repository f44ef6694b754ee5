//! Writing a client's replies out: at once when the socket takes them, otherwise within the
//! output timeout, so a client that stops reading is disconnected instead of making the
//! server hold its replies; and how large a connection's buffers may stay.

use std::io;
use std::pin::pin;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Buffers above this are shrunk back once their contents are gone, so one huge command or
/// reply does not pin memory for the life of the connection.
pub(super) const KEEP_BUFFER_BYTES: usize = 64 * 1024;

/// The error that closes a client which did not take its replies in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("did not take its replies within the output timeout")]
struct OutputStalled;

/// Writes out what is pending, bounded by the output timeout.
pub(super) async fn flush<S: AsyncWrite + Unpin>(
    stream: &mut S,
    output: &mut Vec<u8>,
    timeout: Duration,
) -> io::Result<()> {
    if !output.is_empty() {
        // TLS holds written bytes until flushed; plain TCP has nothing to flush.
        let mut write = pin!(async {
            stream.write_all(output).await?;
            stream.flush().await
        });
        // Replies usually fit in the socket buffer: one poll writes them without a timer.
        let done = match write.as_mut().now_or_never() {
            Some(done) => done,
            None => tokio::time::timeout(timeout, write)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, OutputStalled))?,
        };
        done?;
    }
    output.clear();
    output.shrink_to(KEEP_BUFFER_BYTES);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::time::timeout;

    use super::super::test_server::{array, connect, start, talk};
    use crate::query::resp::RespLimits;

    #[tokio::test]
    async fn a_client_that_does_not_read_is_disconnected_and_others_are_served() {
        let server = start(RespLimits {
            output_buffer_bytes: 4096,
            output_timeout: Duration::from_millis(500),
            ..RespLimits::default()
        })
        .await;
        let flooder = connect(&server).await;
        let one = array("HGETALL alice");
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 2000).collect();
        // Writes until the server stops reading (its replies fill the socket buffers) and
        // then closes this client; the writes then fail.
        let flood = tokio::spawn(async move {
            let mut flooder = flooder;
            let mut sent = 0_usize;
            for _ in 0..10_000 {
                match timeout(Duration::from_secs(10), flooder.write_all(&batch)).await {
                    Ok(Ok(())) => sent += batch.len(),
                    _ => break,
                }
            }
            sent
        });
        let mut other = connect(&server).await;
        talk(&mut other, &[("GET alice", "$1\r\n3\r\n")]).await;
        let sent = timeout(Duration::from_secs(20), flood)
            .await
            .expect("flooder cut off")
            .unwrap();
        assert!(
            sent < 10_000 * one.len() * 2000,
            "the flood was never cut off"
        );
        talk(&mut other, &[("GET bob", "$2\r\n12\r\n")]).await;
    }
}
