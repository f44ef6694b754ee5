//! One client's connection: a task that reads as many bytes as are there, answers the
//! complete commands in the buffer into one output buffer and writes it with one syscall,
//! because that is what makes pipelined clients fast. The loop is the same over plain TCP and
//! TLS ([`Link`]); what each command does is [`crate::query::resp_commands`].

use std::io::{self, Write as _};
use std::ops::Range;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::debug;

use super::output::{flush, KEEP_BUFFER_BYTES};
use super::quiet::Quiet;
use super::RespServer;
use crate::query::resp_commands::Flow;
use crate::query::resp_protocol::{parse_command, Parsed, Proto};
use crate::telemetry::Metrics;

const READ_CHUNK: usize = 16 * 1024;

/// One client's connection state.
pub(in crate::query) struct Session {
    pub(in crate::query) server: Arc<RespServer>,
    pub(in crate::query) id: u64,
    pub(in crate::query) name: Option<Vec<u8>>,
    pub(in crate::query) proto: Proto,
    pub(in crate::query) authenticated: bool,
    pub(in crate::query) failed_logins: u32,
    /// The client is another instance forwarding a read: never forward it again.
    pub(in crate::query) forwarding_peer: bool,
    pub(in crate::query) permits: Arc<Semaphore>,
}

/// A connection's byte stream, plain TCP or TLS, with the read that does not wait which the
/// loop's fast path needs.
pub(super) trait Link: AsyncRead + AsyncWrite + Unpin + Send {
    /// Reads what has already arrived; `WouldBlock` when nothing has.
    fn read_now(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
}

impl Link for TcpStream {
    fn read_now(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.try_read_buf(buf)
    }
}

impl Link for tokio_rustls::server::TlsStream<TcpStream> {
    fn read_now(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        // Polled once: decrypted bytes rustls already holds, or what the socket has. A read
        // that would wait leaves its partial record inside rustls, so nothing is lost.
        self.read_buf(buf)
            .now_or_never()
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
    }
}

impl Session {
    /// A new client: RESP2, logged in when the server needs no password.
    pub(super) fn new(server: Arc<RespServer>, id: u64, permits: Arc<Semaphore>) -> Session {
        Session {
            authenticated: !server.auth.required(),
            server,
            id,
            name: None,
            proto: Proto::Resp2,
            failed_logins: 0,
            forwarding_peer: false,
            permits,
        }
    }

    pub(super) async fn run<S: Link>(mut self, mut stream: S) -> io::Result<()> {
        let limits = self.server.limits;
        let request_limits = limits.request();
        let mut input: Vec<u8> = Vec::new();
        let mut output: Vec<u8> = Vec::new();
        let mut args: Vec<Range<usize>> = Vec::new();
        let mut quiet = Quiet::new(limits.idle_timeout);
        loop {
            let mut start = 0;
            let mut flow = Flow::Continue;
            // Counted once a batch: a shared counter bumped per pipelined GET would cost
            // more than the GET.
            let mut commands = 0;
            while start < input.len() && flow == Flow::Continue {
                match parse_command(&input[start..], &request_limits, &mut args) {
                    Ok(Parsed::Incomplete) => break,
                    Ok(Parsed::Command(len)) => {
                        let frame = &input[start..start + len];
                        start += len;
                        if args.is_empty() {
                            continue;
                        }
                        commands += 1;
                        flow = self.execute(frame, &args, &mut output);
                        if let Flow::Wait(bound) = flow {
                            flow = self.wait(bound, frame, &args, &mut output).await;
                        }
                        if let Flow::Forward(job) = flow {
                            self.forward(job, frame, &args, &mut output).await;
                            flow = Flow::Continue;
                        }
                    }
                    Err(error) => {
                        debug!(client = self.id, %error, "resp protocol error");
                        let _ = write!(output, "-ERR Protocol error: {error}\r\n");
                        flow = Flow::Close;
                    }
                }
                if output.len() >= limits.output_buffer_bytes {
                    flush(&mut stream, &mut output, limits.output_timeout).await?;
                }
            }
            Metrics::add(&self.server.stats.requests, commands);
            flush(&mut stream, &mut output, limits.output_timeout).await?;
            if flow == Flow::Close {
                return Ok(());
            }
            input.drain(..start);
            if input.is_empty() && input.capacity() > KEEP_BUFFER_BYTES {
                input = Vec::new();
            }
            if input.capacity() - input.len() < READ_CHUNK / 4 {
                input.reserve(READ_CHUNK);
            }
            // Pipelining clients usually have the next batch waiting: read it without a timer.
            match stream.read_now(&mut input) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    quiet.heard();
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match quiet.wait(&mut stream, &mut input, &mut output).await? {
                Some(0) => return Ok(()),
                Some(_) => quiet.heard(),
                None => {
                    debug!(
                        client = self.id,
                        "resp connection closed: idle for longer than the timeout"
                    );
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::super::test_server::{array, connect, expect, start, talk, until_closed};
    use crate::query::resp::RespLimits;

    #[tokio::test]
    async fn inline_commands_work_like_telnet() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        expect(&mut client, b"PING\r\n", b"+PONG\r\n").await;
        expect(&mut client, b"GET alice\r\n", b"$1\r\n3\r\n").await;
        expect(&mut client, b"  hget bob\thelloCount \n", b"$2\r\n12\r\n").await;
        // An empty line gets no reply, so the PING's is the next one.
        expect(&mut client, b"\r\nping\r\n", b"+PONG\r\n").await;
        expect(&mut client, b"QUIT\r\n", b"+OK\r\n").await;
        assert_eq!(until_closed(&mut client).await, b"");
    }

    #[tokio::test]
    async fn a_pipelined_batch_is_answered_in_order() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        let answers = [
            ("alice", "$1\r\n3\r\n"),
            ("bob", "$2\r\n12\r\n"),
            ("nobody", "$-1\r\n"),
        ];
        let (mut request, mut reply) = (Vec::new(), Vec::new());
        for (key, answer) in answers.iter().cycle().take(100) {
            request.extend_from_slice(&array(&format!("GET {key}")));
            reply.extend_from_slice(answer.as_bytes());
        }
        // Inline and array commands mix in one batch.
        request.extend_from_slice(b"PING\r\n");
        reply.extend_from_slice(b"+PONG\r\n");
        expect(&mut client, &request, &reply).await;
    }

    #[tokio::test]
    async fn protocol_errors_close_only_that_connection() {
        let limits = RespLimits {
            max_request_bytes: 4096,
            max_args: 16,
            ..RespLimits::default()
        };
        let server = start(limits).await;
        let mut good = connect(&server).await;
        talk(&mut good, &[("PING", "+PONG\r\n")]).await;
        let cases: &[(&[u8], &str)] = &[
            (
                b"*99999999999\r\n",
                "too many arguments: 99999999999, at most 16",
            ),
            (b"*1\r\n+PING\r\n", "expected '$', got byte 0x2b"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$99999\r\n", "invalid bulk length"),
            (b"*\x07\x00\xff\r\n", "invalid multibulk length"),
            (&[b'a'; 5000], "request larger than 4096 bytes"),
        ];
        for (request, error) in cases {
            let mut bad = connect(&server).await;
            bad.write_all(request).await.unwrap();
            let reply = format!("-ERR Protocol error: {error}\r\n");
            assert_eq!(until_closed(&mut bad).await, reply.as_bytes());
            talk(&mut good, &[("GET alice", "$1\r\n3\r\n")]).await;
        }

        // A truncated bulk string, then the client goes away: closed without a reply.
        let mut truncated = connect(&server).await;
        truncated
            .write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nal")
            .await
            .unwrap();
        truncated.shutdown().await.unwrap();
        assert_eq!(until_closed(&mut truncated).await, b"");

        // Random bytes: whatever the server answers, it must not hang or affect others.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut garbage = Vec::new();
        for _ in 0..2048 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            garbage.push(seed as u8);
        }
        let mut noisy = connect(&server).await;
        noisy.write_all(&garbage).await.unwrap();
        noisy.shutdown().await.unwrap();
        until_closed(&mut noisy).await;

        talk(
            &mut good,
            &[("MGET alice bob", "*2\r\n$1\r\n3\r\n$2\r\n12\r\n")],
        )
        .await;
        talk(&mut connect(&server).await, &[("GET bob", "$2\r\n12\r\n")]).await;
    }
}
