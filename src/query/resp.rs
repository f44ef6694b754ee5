//! A read-only Redis protocol server (RESP2, and RESP3 after `HELLO 3`), so `redis-cli`,
//! `redis-benchmark` and Redis client libraries can read the counters.
//!
//! A key's state is a hash (`HGETALL alice`), and `GET alice` is its `helloCount`. A key owned
//! by another instance is forwarded to its owner ([`super::resp_forward`]), or, with
//! forwarding off, answered `-MOVED <partition> <host:port>` so `redis-cli -c` follows it; a
//! restoring partition answers `-TRYAGAIN`. Writes are refused: state changes only through
//! the input topic. The commands themselves are [`super::resp_commands`].
//!
//! One task per connection reads as many bytes as are there, answers the complete commands
//! in the buffer into one output buffer and writes it with one syscall: that is what makes
//! pipelined clients fast. What one client can make the server hold is bounded as in Redis:
//! `maxclients`, an idle `timeout`, an output limit (past it the server writes before it
//! reads on, and a client that does not take its replies in time is disconnected), a
//! command-size limit, and buffers that shrink back when the connection goes quiet.
//!
//! With TLS the handshake runs in the connection's task, within the handshake timeout and
//! under its place in `maxclients`; the loop is the same over either stream ([`Link`]).

use std::io::{self, Write as _};
use std::ops::Range;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, Sleep};
use tracing::{debug, info, warn};

use super::accept::{accept, Accepted};
use super::auth::RespAuth;
use super::resp_commands::Flow;
use super::resp_forward::RespForwarder;
use super::resp_protocol::{parse_command, Parsed, Proto};
use super::tls::Tls;
use super::StateQuery;
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, ServerStats};

const READ_CHUNK: usize = 16 * 1024;
/// Buffers above this are shrunk back once their contents are gone, so one huge command or
/// reply does not pin memory for the life of the connection.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;
/// A connection quiet for this long gives its buffers back: idle clients then cost a task
/// and a socket, not 32 KiB each.
const IDLE_TRIM: Duration = Duration::from_secs(1);

pub(super) const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Connections served at once (`maxclients`); one more is told so and closed.
    pub max_connections: usize,
    /// Largest single command (all its arguments) in bytes.
    pub max_request_bytes: usize,
    /// Most arguments in one command, the name included.
    pub max_args: usize,
    /// A client that sends nothing for this long is closed (Redis' `timeout`); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Reply bytes held for one client; past it the server writes before reading on.
    pub output_buffer_bytes: usize,
    /// A client that does not take its replies for this long is closed.
    pub output_timeout: Duration,
    /// Longest `WAITMS` a read with `AFTER` may ask for.
    pub max_wait: Duration,
}

impl RespLimits {
    pub const DEFAULT: RespLimits = RespLimits {
        max_connections: 10_000,
        max_request_bytes: 1024 * 1024,
        max_args: 1024,
        idle_timeout: Some(Duration::from_secs(300)),
        output_buffer_bytes: 1024 * 1024,
        output_timeout: Duration::from_secs(10),
        max_wait: Duration::from_secs(5),
    };
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits::DEFAULT
    }
}

/// Everything a RESP server needs besides its socket.
pub struct RespServer {
    pub query: Arc<dyn StateQuery>,
    pub limits: RespLimits,
    pub auth: RespAuth,
    /// `None`: keys owned elsewhere are answered with `-MOVED`.
    pub forwarder: Option<Arc<RespForwarder>>,
    /// `Some`: connections speak TLS.
    pub tls: Option<Arc<Tls>>,
    pub stats: Arc<ServerStats>,
}

impl RespServer {
    /// A server with default limits, no authentication and no forwarding.
    pub fn open(query: Arc<dyn StateQuery>, limits: RespLimits) -> Self {
        RespServer {
            query,
            limits,
            auth: RespAuth::default(),
            forwarder: None,
            tls: None,
            stats: Arc::default(),
        }
    }
}

/// Serves RESP on `listener` until `shutdown` fires; returns once every connection task ended.
pub async fn serve(
    listener: TcpListener,
    server: RespServer,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    let limits = server.limits;
    info!(%addr, max_connections = limits.max_connections, tls = server.tls.is_some(), "resp query server listening");
    let server = Arc::new(server);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            // Reap finished connections so the set stays as small as the live ones.
            Some(joined) = connections.join_next(), if !connections.is_empty() => log_join(joined),
            accepted = accept(&listener, &permits, MAX_CLIENTS, "resp", &server.stats) => {
                let Some(Accepted { stream, peer, permit, open }) = accepted else {
                    continue;
                };
                next_id += 1;
                let session = Session {
                    server: server.clone(),
                    id: next_id,
                    name: None,
                    proto: Proto::Resp2,
                    authenticated: !server.auth.required(),
                    failed_logins: 0,
                    forwarding_peer: false,
                    permits: permits.clone(),
                };
                let mut stop = shutdown.clone();
                let tls = server.tls.clone();
                connections.spawn(async move {
                    let _held = (permit, open);
                    let served = async {
                        // Replies are written once per batch already; Nagle would only add
                        // latency.
                        stream.set_nodelay(true)?;
                        match tls {
                            None => session.run(stream).await,
                            Some(tls) => session.run(tls.accept(stream).await?).await,
                        }
                    };
                    tokio::select! {
                        result = served => {
                            if let Err(error) = result {
                                debug!(%peer, %error, "resp connection ended with an error");
                            }
                        }
                        // Dropping the connection future closes the socket wherever it waits.
                        _ = stop.wait() => {}
                    }
                });
            }
        }
    }
    drop(listener);
    while let Some(joined) = connections.join_next().await {
        log_join(joined);
    }
    info!(%addr, "resp query server stopped");
    Ok(())
}

fn log_join(joined: Result<(), JoinError>) {
    if let Err(error) = joined {
        warn!(%error, "resp connection task failed");
    }
}

/// One client's connection state.
pub(super) struct Session {
    pub(super) server: Arc<RespServer>,
    pub(super) id: u64,
    pub(super) name: Option<Vec<u8>>,
    pub(super) proto: Proto,
    pub(super) authenticated: bool,
    pub(super) failed_logins: u32,
    /// The client is another instance forwarding a read: never forward it again.
    pub(super) forwarding_peer: bool,
    pub(super) permits: Arc<Semaphore>,
}

/// Why a connection ended without an I/O error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Ended {
    #[error("idle for longer than the timeout")]
    Idle,
    #[error("did not take its replies within the output timeout")]
    OutputStalled,
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
    async fn run<S: Link>(mut self, mut stream: S) -> io::Result<()> {
        let limits = self.server.limits;
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
                match parse_command(&input[start..], &limits, &mut args) {
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
                    debug!(client = self.id, "resp connection closed: {}", Ended::Idle);
                    return Ok(());
                }
            }
        }
    }
}

/// Writes out what is pending, bounded by the output timeout.
async fn flush<S: Link>(stream: &mut S, output: &mut Vec<u8>, timeout: Duration) -> io::Result<()> {
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
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, Ended::OutputStalled))?,
        };
        done?;
    }
    output.clear();
    output.shrink_to(KEEP_BUFFER_BYTES);
    Ok(())
}

/// Notices a quiet connection without a timer per wait: one timer per connection, reset
/// only when it fires, so a busy connection pays for it about once per [`IDLE_TRIM`].
struct Quiet {
    timer: Pin<Box<Sleep>>,
    last_input: Instant,
    idle_timeout: Option<Duration>,
}

impl Quiet {
    fn new(idle_timeout: Option<Duration>) -> Self {
        let first = idle_timeout.map_or(IDLE_TRIM, |t| t.min(IDLE_TRIM));
        Quiet {
            timer: Box::pin(tokio::time::sleep(first)),
            last_input: Instant::now(),
            idle_timeout,
        }
    }

    fn heard(&mut self) {
        self.last_input = Instant::now();
    }

    /// Reads what the client sends next into `input`: the bytes read (0 when it closed), or
    /// `None` when it stayed quiet past the idle timeout. A connection quiet for
    /// [`IDLE_TRIM`] gives its (empty) buffers back.
    async fn wait<S: Link>(
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
    use std::net::SocketAddr;

    use std::collections::BTreeMap;

    use tokio::io::AsyncReadExt;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;
    use crate::query::auth::Secret;
    use crate::query::http::fake::FakeQuery;
    use crate::query::resp_commands::{CROSSSLOT, DBSIZE, NOAUTH, READ_ONLY, WRONGPASS};
    use crate::query::resp_protocol::{bulk, COMMANDS};
    use crate::shutdown::{self, Trigger};

    const WAIT: Duration = Duration::from_secs(5);
    /// `HGETALL alice` in RESP2.
    const ALICE_HASH: &str = "*10\r\n$10\r\nhelloCount\r\n$1\r\n3\r\n$15\r\nhelloTotalCount\r\n\
        $1\r\n7\r\n$4\r\nmood\r\n$5\r\nHAPPY\r\n$8\r\nrevision\r\n$2\r\n12\r\n\
        $9\r\nupdatedAt\r\n$13\r\n1700000000123\r\n";

    struct Server {
        addr: SocketAddr,
        trigger: Trigger,
        task: JoinHandle<io::Result<()>>,
    }

    async fn start(limits: RespLimits) -> Server {
        start_with(limits, RespAuth::default()).await
    }

    async fn start_with(limits: RespLimits, auth: RespAuth) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let query = Arc::new(FakeQuery::new());
        let server = RespServer {
            auth,
            ..RespServer::open(query, limits)
        };
        let task = tokio::spawn(serve(listener, server, shutdown));
        Server {
            addr,
            trigger,
            task,
        }
    }

    async fn connect(server: &Server) -> TcpStream {
        TcpStream::connect(server.addr).await.unwrap()
    }

    /// Encodes a space-separated command as a RESP array, as client libraries send it.
    fn array(command: &str) -> Vec<u8> {
        let words: Vec<&str> = command.split(' ').collect();
        let mut out = format!("*{}\r\n", words.len()).into_bytes();
        words
            .iter()
            .for_each(|word| bulk(&mut out, word.as_bytes()));
        out
    }

    /// Sends `request` and asserts that exactly `reply` comes back.
    async fn expect(stream: &mut TcpStream, request: &[u8], reply: &[u8]) {
        stream.write_all(request).await.unwrap();
        let mut got = vec![0; reply.len()];
        timeout(WAIT, stream.read_exact(&mut got))
            .await
            .expect("reply in time")
            .unwrap();
        let (got, want) = (
            got.escape_ascii().to_string(),
            reply.escape_ascii().to_string(),
        );
        assert_eq!(got, want, "request {}", request.escape_ascii());
    }

    /// Sends each command as a RESP array and checks its reply, in order.
    async fn talk(stream: &mut TcpStream, script: &[(&str, &str)]) {
        for (command, reply) in script {
            expect(stream, &array(command), reply.as_bytes()).await;
        }
    }

    /// Everything the server sends until it closes (a reset counts as closed).
    async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let read = timeout(WAIT, stream.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "server closed in time");
        got
    }

    #[tokio::test]
    async fn ping_echo_and_quit() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        talk(
            &mut client,
            &[
                ("PING", "+PONG\r\n"),
                ("ping hi", "$2\r\nhi\r\n"),
                (
                    "PING a b",
                    "-ERR wrong number of arguments for 'ping' command\r\n",
                ),
                ("ECHO hello", "$5\r\nhello\r\n"),
                ("QUIT", "+OK\r\n"),
            ],
        )
        .await;
        assert_eq!(until_closed(&mut client).await, b"");
    }

    #[tokio::test]
    async fn reads_counters_and_hashes() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        let alice = ALICE_HASH;
        talk(
            &mut client,
            &[
                ("GET alice", "$1\r\n3\r\n"),
                ("gEt nobody", "$-1\r\n"),
                (
                    "MGET alice bob nobody",
                    "*3\r\n$1\r\n3\r\n$2\r\n12\r\n$-1\r\n",
                ),
                ("HGETALL alice", alice),
                ("hgetall nobody", "*0\r\n"),
                ("HGET bob mood", "$5\r\nANGRY\r\n"),
                ("HGET bob helloTotalCount", "$2\r\n20\r\n"),
                ("HGET alice nope", "$-1\r\n"),
                ("HGET nobody helloCount", "$-1\r\n"),
                ("EXISTS alice bob nobody", ":2\r\n"),
                (
                    "GET",
                    "-ERR wrong number of arguments for 'get' command\r\n",
                ),
            ],
        )
        .await;
    }

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
    async fn keys_owned_elsewhere_or_restoring_answer_like_a_cluster() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        let moved = "-MOVED 1 10.0.0.2:6380\r\n";
        let crossslot = std::str::from_utf8(CROSSSLOT).unwrap();
        let restoring = "-TRYAGAIN partition 2 is restoring (40/100 records)\r\n";
        talk(
            &mut client,
            &[
                ("GET remote-1", moved),
                ("HGETALL far", "-MOVED 5 10.0.0.3:6380\r\n"),
                ("GET restoring", restoring),
                (
                    "GET orphan",
                    "-TRYAGAIN partition 4 has no owner right now\r\n",
                ),
                ("GET broken", "-ERR store read failed: disk on fire\r\n"),
                ("MGET remote-1 remote-2", moved),
                ("MGET alice remote-1", crossslot),
                ("MGET remote-1 far", crossslot),
                ("MGET alice restoring", restoring),
                ("EXISTS remote-1", moved),
            ],
        )
        .await;
        let invalid = b"-ERR invalid key: key is not valid UTF-8\r\n";
        expect(&mut client, b"*2\r\n$3\r\nGET\r\n$1\r\n\xff\r\n", invalid).await;
        talk(&mut client, &[("GET alice", "$1\r\n3\r\n")]).await;
    }

    #[tokio::test]
    async fn writes_and_unknown_commands_are_refused() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        let read_only = std::str::from_utf8(READ_ONLY).unwrap();
        for write in [
            "SET k v",
            "del k",
            "INCR k",
            "HSET k f v",
            "EXPIRE k 1",
            "FLUSHALL",
            "flushdb",
        ] {
            talk(&mut client, &[(write, read_only)]).await;
        }
        talk(
            &mut client,
            &[("FOO bar", "-ERR unknown command 'FOO'\r\n")],
        )
        .await;
        talk(
            &mut client,
            &[("B\r\nD", "-ERR unknown command 'B??D'\r\n")],
        )
        .await;
    }

    #[tokio::test]
    async fn server_commands_satisfy_redis_tools() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        client.write_all(&array("INFO")).await.unwrap();
        let mut info = vec![0; 1024];
        let len = timeout(WAIT, client.read(&mut info))
            .await
            .unwrap()
            .unwrap();
        let info = String::from_utf8_lossy(&info[..len]);
        for line in [
            "# Server",
            "redis_version:7.0.0",
            "instance_id:node-a",
            "role:master",
        ] {
            assert!(info.contains(line), "{line} in {info}");
        }
        assert!(info.contains("connected_clients:1") && info.ends_with("# Keyspace\r\n\r\n"));
        let hello = "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
            $5\r\nproto\r\n:2\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
            $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
        let get_info = "*2\r\n*6\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n\
            :1\r\n:1\r\n:1\r\n$-1\r\n";
        let dbsize = std::str::from_utf8(DBSIZE).unwrap();
        talk(
            &mut client,
            &[
                ("INFO keyspace", "$12\r\n# Keyspace\r\n\r\n"),
                ("COMMAND COUNT", ":16\r\n"),
                ("COMMAND DOCS", "*0\r\n"),
                ("COMMAND INFO get nope", get_info),
                ("HELLO", hello),
                ("HELLO 2", hello),
                ("HELLO 4", "-NOPROTO unsupported protocol version\r\n"),
                ("CLIENT GETNAME", "$-1\r\n"),
                ("CLIENT SETNAME me", "+OK\r\n"),
                ("client getname", "$2\r\nme\r\n"),
                ("CLIENT ID", ":1\r\n"),
                ("CLIENT SETINFO LIB-NAME x", "+OK\r\n"),
                (
                    "CLIENT KILL",
                    "-ERR unknown or malformed CLIENT subcommand 'KILL'\r\n",
                ),
                ("SELECT 0", "+OK\r\n"),
                ("SELECT 1", "-ERR DB index is out of range\r\n"),
                (
                    "SELECT x",
                    "-ERR value is not an integer or out of range\r\n",
                ),
                ("CONFIG GET save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
                (
                    "CONFIG GET appendonly",
                    "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
                ),
                ("CONFIG GET maxmemory", "*0\r\n"),
                (
                    "CLIENT SETNAME a\tb",
                    std::str::from_utf8(BAD_NAME_REPLY).unwrap(),
                ),
                ("CONFIG SET a b", "-ERR only CONFIG GET is supported\r\n"),
                ("DBSIZE", dbsize),
            ],
        )
        .await;
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

    #[tokio::test]
    async fn connections_over_the_limit_are_refused() {
        let server = start(RespLimits {
            max_connections: 2,
            ..RespLimits::default()
        })
        .await;
        let (mut first, mut second) = (connect(&server).await, connect(&server).await);
        // A reply proves the server accepted (and counted) each connection.
        talk(&mut first, &[("PING", "+PONG\r\n")]).await;
        talk(&mut second, &[("PING", "+PONG\r\n")]).await;
        assert_eq!(until_closed(&mut connect(&server).await).await, MAX_CLIENTS);

        drop(first);
        // The slot frees once the server saw the close, which takes a moment.
        for attempt in 0.. {
            let mut next = connect(&server).await;
            let mut reply = [0; 7];
            next.write_all(b"PING\r\n").await.unwrap();
            let read = timeout(WAIT, next.read_exact(&mut reply)).await;
            if matches!(read, Ok(Ok(_))) && &reply == b"+PONG\r\n" {
                break;
            }
            assert!(attempt < 100, "no slot freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        talk(&mut second, &[("GET alice", "$1\r\n3\r\n")]).await;
    }

    #[tokio::test]
    async fn shutdown_closes_connections_and_returns() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        talk(&mut client, &[("PING", "+PONG\r\n")]).await;
        server.trigger.fire();
        let result = timeout(WAIT, server.task)
            .await
            .expect("serve returned in time");
        assert!(result.unwrap().is_ok());
        assert_eq!(until_closed(&mut client).await, b"");
    }

    #[tokio::test]
    async fn the_redis_client_library_reads_state() {
        let server = start(RespLimits::default()).await;
        let client = redis::Client::open(format!("redis://{}/", server.addr)).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
        let get = redis::cmd("GET").arg("alice").query_async(&mut con).await;
        assert_eq!(get, Ok(Some(3_u64)));
        let mut mget = redis::cmd("MGET");
        mget.arg("alice").arg("bob").arg("nobody");
        let counts: Vec<Option<u64>> = mget.query_async(&mut con).await.unwrap();
        assert_eq!(counts, [Some(3), Some(12), None]);
        let hgetall = redis::cmd("HGETALL")
            .arg("alice")
            .query_async(&mut con)
            .await;
        let hash: std::collections::HashMap<String, String> = hgetall.unwrap();
        assert_eq!(
            (hash["helloCount"].as_str(), hash["mood"].as_str()),
            ("3", "HAPPY")
        );
        assert_eq!(hash["updatedAt"], "1700000000123");

        let moved = redis::cmd("GET")
            .arg("remote-1")
            .query_async::<u64>(&mut con)
            .await;
        let moved = moved.unwrap_err();
        assert_eq!(moved.code(), Some("MOVED"));
        assert_eq!(moved.redirect_node(), Some(("10.0.0.2:6380", 1)));
        let refused = redis::cmd("SET")
            .arg("a")
            .arg("b")
            .query_async::<()>(&mut con)
            .await;
        assert!(refused.unwrap_err().to_string().contains("read-only"));
        let commands: redis::Value = redis::cmd("COMMAND").query_async(&mut con).await.unwrap();
        assert!(matches!(commands, redis::Value::Array(v) if v.len() == COMMANDS.len()));
    }

    const BAD_NAME_REPLY: &[u8] = b"-ERR Client names cannot contain spaces, newlines or special \
        characters, and are at most 256 bytes.\r\n";

    #[tokio::test]
    async fn resp3_after_hello_3() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        let hello3 = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
            $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
            $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
        let alice = "%5\r\n$10\r\nhelloCount\r\n$1\r\n3\r\n$15\r\nhelloTotalCount\r\n$1\r\n7\r\n\
            $4\r\nmood\r\n$5\r\nHAPPY\r\n$8\r\nrevision\r\n$2\r\n12\r\n\
            $9\r\nupdatedAt\r\n$13\r\n1700000000123\r\n";
        talk(
            &mut client,
            &[
                ("GET nobody", "$-1\r\n"),
                ("HELLO 3 SETNAME py", hello3),
                ("CLIENT GETNAME", "$2\r\npy\r\n"),
                ("GET nobody", "_\r\n"),
                ("MGET alice nobody", "*2\r\n$1\r\n3\r\n_\r\n"),
                ("HGETALL alice", alice),
                ("HGETALL nobody", "%0\r\n"),
                ("HGET alice nope", "_\r\n"),
                ("CONFIG GET save", "%1\r\n$4\r\nsave\r\n$0\r\n\r\n"),
                ("HELLO 2", &hello3.replace("%7", "*14").replace(":3", ":2")),
                ("GET nobody", "$-1\r\n"),
            ],
        )
        .await;
    }

    fn users() -> RespAuth {
        RespAuth {
            password: Secret::new("pw"),
            users: BTreeMap::from([("app".to_owned(), Secret::new("apppw"))]),
        }
    }

    #[tokio::test]
    async fn auth_with_password_users_and_hello() {
        let server = start_with(RespLimits::default(), users()).await;
        let noauth = std::str::from_utf8(NOAUTH).unwrap();
        let wrongpass = std::str::from_utf8(WRONGPASS).unwrap();
        let mut client = connect(&server).await;
        talk(
            &mut client,
            &[
                ("GET alice", noauth),
                ("PING", noauth),
                ("SET a b", noauth),
                ("AUTH nope", wrongpass),
                ("AUTH app pw", wrongpass),
                ("AUTH pw", "+OK\r\n"),
                ("GET alice", "$1\r\n3\r\n"),
            ],
        )
        .await;
        let mut named = connect(&server).await;
        talk(
            &mut named,
            &[("AUTH app apppw", "+OK\r\n"), ("GET bob", "$2\r\n12\r\n")],
        )
        .await;

        let mut hello = connect(&server).await;
        talk(
            &mut hello,
            &[("HELLO 3 AUTH app wrong", wrongpass), ("GET alice", noauth)],
        )
        .await;
        hello
            .write_all(&array("HELLO 3 AUTH app apppw"))
            .await
            .unwrap();
        let mut head = [0; 2];
        timeout(WAIT, hello.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"%7");

        // Guessing closes the connection after a few tries.
        let mut guesser = connect(&server).await;
        let mut guesses = Vec::new();
        for _ in 0..20 {
            guesses.extend_from_slice(&array("AUTH guess"));
        }
        guesser.write_all(&guesses).await.unwrap();
        let answer = until_closed(&mut guesser).await;
        assert_eq!(answer, wrongpass.repeat(10).as_bytes());
    }

    #[tokio::test]
    async fn auth_without_a_password_is_an_error_like_redis() {
        let server = start(RespLimits::default()).await;
        let mut client = connect(&server).await;
        client.write_all(&array("AUTH x")).await.unwrap();
        let mut reply = [0; 5];
        timeout(WAIT, client.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&reply, b"-ERR ");
    }

    #[tokio::test]
    async fn reads_after_an_offset_answer_or_say_not_yet() {
        let server = start(RespLimits {
            max_wait: Duration::from_millis(300),
            ..RespLimits::default()
        })
        .await;
        let mut client = connect(&server).await;
        let bad =
            "-ERR syntax error: a read's options are AFTER <offset> [WAITMS <milliseconds>]\r\n";
        let alice = ALICE_HASH;
        talk(
            &mut client,
            &[
                // alice's partition has applied offset 11.
                ("GET alice AFTER 11", "$1\r\n3\r\n"),
                ("GET alice waitms 50 after 3", "$1\r\n3\r\n"),
                ("HGET alice mood AFTER 11 WAITMS 10", "$5\r\nHAPPY\r\n"),
                ("HGETALL alice AFTER 0", alice),
                ("GET nobody AFTER 11", "$-1\r\n"),
                (
                    "GET alice AFTER 12 WAITMS 50",
                    "-NOTYET partition 0 has applied input up to offset 11, not yet 12\r\n",
                ),
                // bob's partition reports no position: never a silent answer.
                (
                    "GET bob AFTER 0",
                    "-NOTYET the key's partition has applied nothing here yet, not yet 0\r\n",
                ),
                // Owned elsewhere, forwarding off: redirected with the options kept by the
                // client, as any -MOVED.
                ("GET remote-1 AFTER 5", "-MOVED 1 10.0.0.2:6380\r\n"),
                (
                    "GET broken AFTER 5",
                    "-ERR store read failed: disk on fire\r\n",
                ),
                ("GET alice AFTER", bad),
                ("GET alice AFTER x", bad),
                ("GET alice WAITMS 10", bad),
                ("GET alice LATER 10", bad),
                ("GET alice x", bad),
                // Only the one-key reads take options.
                ("MGET alice AFTER 11", "*3\r\n$1\r\n3\r\n$-1\r\n$-1\r\n"),
                (
                    "ECHO a b",
                    "-ERR wrong number of arguments for 'echo' command\r\n",
                ),
            ],
        )
        .await;
        // A wait is bounded by max_wait whatever the client asks.
        let started = std::time::Instant::now();
        talk(
            &mut client,
            &[(
                "GET alice AFTER 99 WAITMS 99999999",
                "-NOTYET partition 0 has applied input up to offset 11, not yet 99\r\n",
            )],
        )
        .await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(2));
    }

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
