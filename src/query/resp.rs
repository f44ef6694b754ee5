//! A read-only Redis protocol (RESP2) server, so `redis-cli`, `redis-benchmark` and any Redis
//! client library can read the counters.
//!
//! A key's state is a hash (`HGETALL alice`), and `GET alice` is its `helloCount`. A key owned
//! by another instance answers `-MOVED <partition> <host:port>` like Redis Cluster, so
//! `redis-cli -c` follows it; a restoring partition answers `-TRYAGAIN`. Writes are refused:
//! state changes only through the input topic.
//!
//! One task per connection reads as many bytes as are there, answers every complete command
//! in the buffer into one output buffer and writes it with one syscall: that is what makes
//! pipelined clients fast. The wire format lives in [`super::resp_protocol`]; its parser
//! works on byte ranges of the input buffer, so a GET allocates nothing once the
//! connection's buffers have grown.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tracing::{debug, info, warn};

use super::resp_protocol::{
    bulk, bulk_u64, command, config, find_command, lookup_error, nil, ok, parse_command,
    push_printable, write_field, Parsed, FIELDS, WRITE_COMMANDS,
};
use super::{Lookup, StateQuery};
use crate::domain::HelloState;
use crate::shutdown::Shutdown;

/// What Redis reports as its version; clients gate features on it, so it must parse as one.
const REDIS_VERSION: &str = "7.0.0";
const READ_CHUNK: usize = 16 * 1024;
/// Output buffers above this are shrunk after a write, so one huge MGET does not pin memory.
const KEEP_OUTPUT_BYTES: usize = 256 * 1024;

const READ_ONLY: &[u8] =
    b"-ERR hello-streams is read-only: state changes only through the hello-events topic\r\n";
const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";
const CROSSSLOT: &[u8] =
    b"-CROSSSLOT Keys in request don't belong to partitions of the same instance\r\n";
const DB_RANGE: &[u8] = b"-ERR DB index is out of range\r\n";
const NOT_AN_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
// Counting keys needs a scan of every store; a made-up 0 would mislead tools.
const DBSIZE: &[u8] = b"-ERR DBSIZE is not supported: counting keys needs a full store scan\r\n";
const NO_AUTH: &[u8] = b"-ERR AUTH is not supported: hello-streams has no users\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespLimits {
    /// Connections served at once; one more is told so and closed.
    pub max_connections: usize,
    /// Largest single command (all its arguments) in bytes.
    pub max_request_bytes: usize,
    /// Most arguments in one command, the name included.
    pub max_args: usize,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            max_connections: 1024,
            max_request_bytes: 1024 * 1024,
            max_args: 1024,
        }
    }
}

/// Serves RESP on `listener` until `shutdown` fires; returns once every connection task ended.
pub async fn serve(
    listener: TcpListener,
    query: Arc<dyn StateQuery>,
    limits: RespLimits,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, max_connections = limits.max_connections, "resp query server listening");
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            // Reap finished connections so the set stays as small as the live ones.
            Some(joined) = connections.join_next(), if !connections.is_empty() => log_join(joined),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        warn!(%error, "resp accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // A fresh socket's send buffer is empty, so a non-blocking write goes
                    // through and the accept loop never waits on a client it refuses.
                    let _ = stream.try_write(MAX_CLIENTS);
                    debug!(%peer, "resp connection refused: max clients");
                    continue;
                };
                next_id += 1;
                let session = Session {
                    query: query.clone(),
                    limits,
                    id: next_id,
                    name: None,
                    permits: permits.clone(),
                };
                let mut stop = shutdown.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        result = session.run(stream) => {
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

/// What the connection loop does after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Marks that the error reply for a lookup was already written.
struct Replied;

struct Session {
    query: Arc<dyn StateQuery>,
    limits: RespLimits,
    id: u64,
    name: Option<Vec<u8>>,
    permits: Arc<Semaphore>,
}

impl Session {
    async fn run(mut self, mut stream: TcpStream) -> io::Result<()> {
        // Replies are written once per batch already; Nagle would only add latency.
        stream.set_nodelay(true)?;
        let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut output: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut args: Vec<Range<usize>> = Vec::new();
        loop {
            let mut start = 0;
            let mut flow = Flow::Continue;
            while start < input.len() && flow == Flow::Continue {
                match parse_command(&input[start..], &self.limits, &mut args) {
                    Ok(Parsed::Incomplete) => break,
                    Ok(Parsed::Command(len)) => {
                        let frame = &input[start..start + len];
                        start += len;
                        if !args.is_empty() {
                            flow = self.execute(frame, &args, &mut output);
                        }
                    }
                    Err(error) => {
                        debug!(client = self.id, %error, "resp protocol error");
                        let _ = write!(output, "-ERR Protocol error: {error}\r\n");
                        flow = Flow::Close;
                    }
                }
            }
            if !output.is_empty() {
                stream.write_all(&output).await?;
                output.clear();
                output.shrink_to(KEEP_OUTPUT_BYTES);
            }
            if flow == Flow::Close {
                return Ok(());
            }
            input.drain(..start);
            if input.capacity() - input.len() < READ_CHUNK / 4 {
                input.reserve(READ_CHUNK);
            }
            if stream.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Answers one command into `out`. `args` is never empty: the loop skips empty commands.
    fn execute(&mut self, frame: &[u8], args: &[Range<usize>], out: &mut Vec<u8>) -> Flow {
        let arg = |i: usize| args.get(i).map(|r| &frame[r.clone()]);
        let name = &frame[args[0].clone()];
        let Some(spec) = find_command(name) else {
            let is_write = WRITE_COMMANDS
                .split(' ')
                .any(|c| name.eq_ignore_ascii_case(c.as_bytes()));
            if is_write {
                out.extend_from_slice(READ_ONLY);
            } else {
                out.extend_from_slice(b"-ERR unknown command '");
                push_printable(out, name);
                out.extend_from_slice(b"'\r\n");
            }
            return Flow::Continue;
        };
        let argc = args.len();
        let arity = spec.arity.unsigned_abs() as usize;
        if argc < arity || (spec.arity > 0 && argc > arity) {
            wrong_arity(out, spec.name);
            return Flow::Continue;
        }
        // Arity was checked above, so the arguments a command needs are there.
        let key = arg(1).unwrap_or_default();
        match spec.name {
            "get" => match self.local(key, out) {
                Ok(Some(state)) => bulk_u64(out, state.hello_count),
                Ok(None) => nil(out),
                Err(Replied) => {}
            },
            "mget" => {
                let mark = out.len();
                let _ = write!(out, "*{}\r\n", argc - 1);
                let _ = self.each_local(frame, &args[1..], out, mark, |out, state| match state {
                    Some(state) => bulk_u64(out, state.hello_count),
                    None => nil(out),
                });
            }
            "exists" => {
                let (mut found, mark) = (0, out.len());
                let count =
                    |_: &mut Vec<u8>, state: Option<&HelloState>| found += state.is_some() as usize;
                if self.each_local(frame, &args[1..], out, mark, count).is_ok() {
                    let _ = write!(out, ":{found}\r\n");
                }
            }
            "hgetall" => match self.local(key, out) {
                Ok(Some(state)) => {
                    out.extend_from_slice(b"*10\r\n");
                    for field in FIELDS {
                        bulk(out, field.as_bytes());
                        write_field(out, &state, field);
                    }
                }
                Ok(None) => out.extend_from_slice(b"*0\r\n"),
                Err(Replied) => {}
            },
            "hget" => match (
                self.local(key, out),
                FIELDS.iter().find(|f| Some(f.as_bytes()) == arg(2)),
            ) {
                (Ok(Some(state)), Some(field)) => write_field(out, &state, field),
                (Ok(_), _) => nil(out),
                (Err(Replied), _) => {}
            },
            "ping" => match argc {
                1 => out.extend_from_slice(b"+PONG\r\n"),
                2 => bulk(out, key),
                _ => wrong_arity(out, spec.name),
            },
            "echo" => bulk(out, key),
            "quit" => {
                ok(out);
                return Flow::Close;
            }
            "info" => self.info(arg(1), out),
            "command" => command(arg(1), frame, args.get(2..).unwrap_or_default(), out),
            "hello" => self.hello(arg(1), out),
            "client" => self.client(key, arg(2), out),
            "select" => match key {
                b"0" => ok(out),
                index if index.iter().all(u8::is_ascii_digit) => out.extend_from_slice(DB_RANGE),
                _ => out.extend_from_slice(NOT_AN_INTEGER),
            },
            "config" => config(key, arg(2), out),
            "dbsize" => out.extend_from_slice(DBSIZE),
            "auth" => out.extend_from_slice(NO_AUTH),
            _ => {
                // Only reachable if COMMANDS lists a name this match does not handle.
                warn!(
                    command = spec.name,
                    "resp command listed but not implemented"
                );
                let _ = write!(out, "-ERR command '{}' is not implemented\r\n", spec.name);
            }
        }
        Flow::Continue
    }

    /// The key's state when this instance owns it; otherwise writes the error reply.
    fn local(&self, key: &[u8], out: &mut Vec<u8>) -> Result<Option<HelloState>, Replied> {
        match self.query.lookup(key) {
            Lookup::Found(state) => Ok(Some(state)),
            Lookup::NotFound => Ok(None),
            other => {
                lookup_error(out, &other);
                Err(Replied)
            }
        }
    }

    /// Calls `each` for every key in order when all of them are local. Otherwise truncates
    /// `out` back to `mark` and writes one error: MOVED when every key has the same remote
    /// owner (the client resends the whole command there), CROSSSLOT when they are spread.
    fn each_local(
        &self,
        frame: &[u8],
        keys: &[Range<usize>],
        out: &mut Vec<u8>,
        mark: usize,
        mut each: impl FnMut(&mut Vec<u8>, Option<&HelloState>),
    ) -> Result<(), Replied> {
        let mut local = 0_usize;
        let mut remote: Option<Lookup> = None;
        let mut spread = false;
        for key in keys {
            match self.query.lookup(&frame[key.clone()]) {
                Lookup::Found(state) => {
                    local += 1;
                    each(out, Some(&state));
                }
                Lookup::NotFound => {
                    local += 1;
                    each(out, None);
                }
                Lookup::Elsewhere { partition, owner } => match &remote {
                    Some(Lookup::Elsewhere { owner: first, .. }) => {
                        spread |= first.resp_addr != owner.resp_addr
                    }
                    _ => remote = Some(Lookup::Elsewhere { partition, owner }),
                },
                other => {
                    out.truncate(mark);
                    lookup_error(out, &other);
                    return Err(Replied);
                }
            }
        }
        let Some(remote) = remote else {
            return Ok(());
        };
        out.truncate(mark);
        if local > 0 || spread {
            out.extend_from_slice(CROSSSLOT);
        } else {
            lookup_error(out, &remote);
        }
        Err(Replied)
    }

    fn info(&self, section: Option<&[u8]>, out: &mut Vec<u8>) {
        let all = section.is_none_or(|s| {
            [&b"all"[..], b"default", b"everything"]
                .iter()
                .any(|a| s.eq_ignore_ascii_case(a))
        });
        let wants =
            |name: &str| all || section.is_some_and(|s| s.eq_ignore_ascii_case(name.as_bytes()));
        // INFO is rare, so building it in a String is fine.
        let mut text = String::new();
        if wants("server") {
            let status = self.query.status();
            let restoring = status
                .partitions
                .iter()
                .filter(|p| p.state == "restoring")
                .count();
            let _ = write!(
                text,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
                 hello_streams_version:{}\r\nprocess_id:{}\r\ninstance_id:{}\r\n\
                 application_id:{}\r\npartitions_owned:{}\r\npartitions_restoring:{restoring}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::process::id(),
                status.instance_id,
                status.application_id,
                status.partitions.len(),
            );
        }
        if wants("clients") {
            let max = self.limits.max_connections;
            let connected = max - self.permits.available_permits();
            let _ = write!(
                text,
                "# Clients\r\nconnected_clients:{connected}\r\nmaxclients:{max}\r\n\r\n"
            );
        }
        if wants("replication") {
            text.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
        }
        if wants("keyspace") {
            text.push_str("# Keyspace\r\n");
        }
        bulk(out, text.as_bytes());
    }

    fn hello(&self, version: Option<&[u8]>, out: &mut Vec<u8>) {
        match version {
            None | Some(b"2") => {
                // RESP2 has no map type: the reply is a flat array of field, value pairs.
                let _ = write!(
                    out,
                    "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n${}\r\n{REDIS_VERSION}\r\n\
                     $5\r\nproto\r\n:2\r\n$2\r\nid\r\n:{}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
                     $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
                    REDIS_VERSION.len(),
                    self.id
                );
            }
            Some(b"3") => {
                out.extend_from_slice(b"-NOPROTO sorry, this protocol version is not supported\r\n")
            }
            Some(_) => out
                .extend_from_slice(b"-ERR Protocol version is not an integer or out of range\r\n"),
        }
    }

    fn client(&mut self, sub: &[u8], value: Option<&[u8]>, out: &mut Vec<u8>) {
        match (sub.to_ascii_uppercase().as_slice(), value) {
            (b"SETNAME", Some(name)) => {
                self.name = Some(name.to_vec());
                ok(out);
            }
            (b"GETNAME", None) => match &self.name {
                Some(name) => bulk(out, name),
                None => nil(out),
            },
            (b"ID", None) => {
                let _ = write!(out, ":{}\r\n", self.id);
            }
            // Clients send their library name and version; there is nothing to keep.
            (b"SETINFO", Some(_)) => ok(out),
            _ => {
                out.extend_from_slice(b"-ERR unknown or malformed CLIENT subcommand '");
                push_printable(out, sub);
                out.extend_from_slice(b"'\r\n");
            }
        }
    }
}

fn wrong_arity(out: &mut Vec<u8>, name: &str) {
    let _ = write!(
        out,
        "-ERR wrong number of arguments for '{name}' command\r\n"
    );
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    use super::*;
    use crate::query::http::fake::FakeQuery;
    use crate::query::resp_protocol::COMMANDS;
    use crate::shutdown::{self, Trigger};

    const WAIT: Duration = Duration::from_secs(5);

    struct Server {
        addr: SocketAddr,
        trigger: Trigger,
        task: JoinHandle<io::Result<()>>,
    }

    async fn start(limits: RespLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = shutdown::channel();
        let query = Arc::new(FakeQuery::new());
        let task = tokio::spawn(serve(listener, query, limits, shutdown));
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
        let alice = "*10\r\n$10\r\nhelloCount\r\n$1\r\n3\r\n$15\r\nhelloTotalCount\r\n$1\r\n7\r\n\
            $4\r\nmood\r\n$5\r\nHAPPY\r\n$8\r\nrevision\r\n$2\r\n12\r\n\
            $9\r\nupdatedAt\r\n$13\r\n1700000000123\r\n";
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
                (
                    "HELLO 3",
                    "-NOPROTO sorry, this protocol version is not supported\r\n",
                ),
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
}
