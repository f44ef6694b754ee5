//! What each RESP command does: reads against the [`super::StateQuery`] (local, forwarded to
//! the owner, or redirected), the connection commands clients send at start (`HELLO`,
//! `AUTH`, `CLIENT`, `COMMAND`, `INFO`, ...), and the refusals (writes, unknown commands).
//! [`super::resp`] runs the connections; this writes one command's reply.
//!
//! Read-your-writes: the one-key reads take trailing options as Redis commands do
//! (`SET key v EX 10`): `GET key AFTER <offset> [WAITMS <ms>]` (likewise `HGET`, `HGETALL`)
//! answers once the key's partition has applied input offset `offset`, waiting at most
//! `WAITMS`, or says `-NOTYET`. The options are those of HTTP's `?after=&wait_ms=`, on the
//! read itself rather than the connection: the offset belongs to one key's partition, and a
//! forwarded read carries them to the owner, which waits there.
//!
//! Windows are read as RedisTimeSeries serves a series, so its clients work unchanged:
//! `TS.RANGE key from to [COUNT n]` (`-` and `+` for the first and last) answers
//! `[[window start, hellos], ...]`, routed to the key's owner like `GET`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::time::Duration;

use tracing::{debug, warn};

use super::resp::Session;
use super::resp_forward::FORWARD_CLIENT;
use super::resp_protocol::{
    bulk, bulk_u64, command, config, find_command, lookup_error, map_header, nil, ok,
    push_printable, write_field, Proto, FIELDS, WRITE_COMMANDS,
};
use super::resp_reply::{write_value, Value};
use super::{wait_for_position, Lookup, Position, StateLookup};
use crate::hello::domain::HelloState;

/// What Redis reports as its version; clients gate features on it, so it must parse as one.
const REDIS_VERSION: &str = "7.0.0";
/// Longest `CLIENT SETNAME` / `HELLO SETNAME` name kept per connection.
const MAX_CLIENT_NAME: usize = 256;
/// Failed logins one connection may make before it is closed, which slows guessing.
const MAX_FAILED_LOGINS: u32 = 10;

pub(super) const READ_ONLY: &[u8] =
    b"-ERR hello-streams is read-only: state changes only through the hello-events topic\r\n";
pub(super) const CROSSSLOT: &[u8] =
    b"-CROSSSLOT Keys in request don't belong to partitions of the same instance\r\n";
const DB_RANGE: &[u8] = b"-ERR DB index is out of range\r\n";
const NOT_AN_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
// Counting keys needs a scan of every store; a made-up 0 would mislead tools.
pub(super) const DBSIZE: &[u8] =
    b"-ERR DBSIZE is not supported: counting keys needs a full store scan\r\n";
pub(super) const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
pub(super) const WRONGPASS: &[u8] =
    b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const NO_PASSWORD: &[u8] = b"-ERR AUTH <password> called without any password configured \
    for the default user. Are you sure your configuration is correct?\r\n";
const HELLO_NOAUTH: &[u8] = b"-NOAUTH HELLO must be called with the client already \
    authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
    authenticate the client and select the RESP protocol version at the same time\r\n";
const BAD_NAME: &[u8] = b"-ERR Client names cannot contain spaces, newlines or special \
    characters, and are at most 256 bytes.\r\n";
const BAD_BOUND: &[u8] =
    b"-ERR syntax error: a read's options are AFTER <offset> [WAITMS <milliseconds>]\r\n";
/// The reads that take `AFTER <offset> [WAITMS <ms>]` after their own arguments.
const BOUNDED_READS: [&str; 3] = ["get", "hget", "hgetall"];
const TS_BAD_TIMESTAMP: &[u8] = b"-ERR TSDB: invalid fromTimestamp or toTimestamp: use milliseconds since the epoch, - or +\r\n";
const TS_OPTIONS: &[u8] =
    b"-ERR TSDB: hello-streams supports only COUNT <n> after TS.RANGE key from to\r\n";
const TS_OFF: &[u8] =
    b"-ERR TSDB: windows are off on this instance ([windows] enabled = false)\r\n";

/// A TS.RANGE bound: epoch milliseconds, `-` (the first) or `+` (the last).
fn ts_bound(text: &[u8]) -> Option<i64> {
    match text {
        b"-" => Some(i64::MIN),
        b"+" => Some(i64::MAX),
        digits => std::str::from_utf8(digits).ok()?.parse().ok(),
    }
}

/// Sent in place of an owner's `-MOVED`: the client asked us, not a cluster.
const MOVING: &[u8] = b"TRYAGAIN the key's partition is moving to another instance";

/// What the connection loop does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Close,
    /// The command needs the key's owner; the loop awaits [`Session::forward`].
    Forward(Forward),
    /// The read asked for a position not reached yet; the loop awaits [`Session::wait`].
    Wait(ReadBound),
}

/// `AFTER <offset> [WAITMS <ms>]`: answer once the key's partition has applied `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadBound {
    after: i64,
    /// Already capped by the server's `max_wait`.
    wait: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Forward {
    /// A one-key command, sent as it came to the owner at this address; the owner may take
    /// this much longer than the forwarding timeout (the read's `WAITMS`).
    One(String, Duration),
    /// A multi-key command with some keys owned elsewhere.
    Many,
}

/// The answer for one key, or what already happened instead.
enum Local {
    State(Option<HelloState>),
    Forward(String),
    /// The read's bound is not reached here yet.
    Wait(ReadBound),
    /// The error reply was written.
    Replied,
}

impl Session {
    fn can_forward(&self) -> bool {
        self.server.forwarder.is_some() && !self.forwarding_peer
    }

    /// Answers one command into `out`. `args` is never empty: the loop skips empty commands.
    pub(super) fn execute(
        &mut self,
        frame: &[u8],
        args: &[Range<usize>],
        out: &mut Vec<u8>,
    ) -> Flow {
        let arg = |i: usize| args.get(i).map(|r| &frame[r.clone()]);
        let name = &frame[args[0].clone()];
        let Some(spec) = find_command(name) else {
            let is_write = WRITE_COMMANDS
                .split(' ')
                .any(|c| name.eq_ignore_ascii_case(c.as_bytes()));
            if !self.authenticated {
                out.extend_from_slice(NOAUTH);
            } else if is_write {
                out.extend_from_slice(READ_ONLY);
            } else {
                out.extend_from_slice(b"-ERR unknown command '");
                push_printable(out, name);
                out.extend_from_slice(b"'\r\n");
            }
            return Flow::Continue;
        };
        if !self.authenticated && !matches!(spec.name, "auth" | "hello" | "quit") {
            out.extend_from_slice(NOAUTH);
            return Flow::Continue;
        }
        let arity = spec.arity.unsigned_abs() as usize;
        let mut bound = None;
        let mut args = args;
        if args.len() > arity && BOUNDED_READS.contains(&spec.name) {
            match read_bound(frame, &args[arity..], self.server.limits.max_wait) {
                Some(read) => bound = Some(read),
                None => {
                    out.extend_from_slice(BAD_BOUND);
                    return Flow::Continue;
                }
            }
            args = &args[..arity];
        }
        let wait = bound.map_or(Duration::ZERO, |b| b.wait);
        let argc = args.len();
        if argc < arity || (spec.arity > 0 && argc > arity) {
            wrong_arity(out, spec.name);
            return Flow::Continue;
        }
        let proto = self.proto;
        // Arity was checked above, so the arguments a command needs are there.
        let key = arg(1).unwrap_or_default();
        match spec.name {
            "get" => match self.local(key, bound, out) {
                Local::State(Some(state)) => bulk_u64(out, state.hello_count),
                Local::State(None) => nil(out, proto),
                Local::Forward(owner) => return Flow::Forward(Forward::One(owner, wait)),
                Local::Wait(bound) => return Flow::Wait(bound),
                Local::Replied => {}
            },
            "mget" => {
                let mark = out.len();
                let _ = write!(out, "*{}\r\n", argc - 1);
                let each = |out: &mut Vec<u8>, state: Option<&HelloState>| match state {
                    Some(state) => bulk_u64(out, state.hello_count),
                    None => nil(out, proto),
                };
                if let Err(Some(job)) = self.each_local(frame, &args[1..], out, mark, each) {
                    return Flow::Forward(job);
                }
            }
            "exists" => {
                let (mut found, mark) = (0, out.len());
                let count =
                    |_: &mut Vec<u8>, state: Option<&HelloState>| found += state.is_some() as usize;
                match self.each_local(frame, &args[1..], out, mark, count) {
                    Ok(()) => {
                        let _ = write!(out, ":{found}\r\n");
                    }
                    Err(Some(job)) => return Flow::Forward(job),
                    Err(None) => {}
                }
            }
            "hgetall" => match self.local(key, bound, out) {
                Local::State(Some(state)) => {
                    map_header(out, FIELDS.len(), proto);
                    for field in FIELDS {
                        bulk(out, field.as_bytes());
                        write_field(out, &state, field);
                    }
                }
                Local::State(None) => map_header(out, 0, proto),
                Local::Forward(owner) => return Flow::Forward(Forward::One(owner, wait)),
                Local::Wait(bound) => return Flow::Wait(bound),
                Local::Replied => {}
            },
            "hget" => {
                let field = FIELDS.iter().find(|f| Some(f.as_bytes()) == arg(2));
                match (self.local(key, bound, out), field) {
                    (Local::State(Some(state)), Some(field)) => write_field(out, &state, field),
                    (Local::State(_), _) => nil(out, proto),
                    (Local::Forward(owner), _) => return Flow::Forward(Forward::One(owner, wait)),
                    (Local::Wait(bound), _) => return Flow::Wait(bound),
                    (Local::Replied, _) => {}
                }
            }
            "ts.range" => match self.ts_range(frame, args, out) {
                Some(owner) => return Flow::Forward(Forward::One(owner, wait)),
                None => {}
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
            "command" => command(arg(1), frame, args.get(2..).unwrap_or_default(), proto, out),
            "hello" => return self.hello(frame, args, out),
            "auth" => return self.auth(arg(1), arg(2), argc, out),
            "client" => self.client(key, arg(2), arg(3), out),
            "select" => match key {
                b"0" => ok(out),
                index if index.iter().all(u8::is_ascii_digit) => out.extend_from_slice(DB_RANGE),
                _ => out.extend_from_slice(NOT_AN_INTEGER),
            },
            "config" => config(key, arg(2), proto, out),
            "dbsize" => out.extend_from_slice(DBSIZE),
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

    /// `TS.RANGE key from to [COUNT n]`; the owner's RESP address when the key's partition
    /// is elsewhere and forwarding is on, else the reply is written.
    fn ts_range(&self, frame: &[u8], args: &[Range<usize>], out: &mut Vec<u8>) -> Option<String> {
        let arg = |i: usize| args.get(i).map(|r| &frame[r.clone()]).unwrap_or_default();
        let (Some(from), Some(to)) = (ts_bound(arg(2)), ts_bound(arg(3))) else {
            out.extend_from_slice(TS_BAD_TIMESTAMP);
            return None;
        };
        let mut count = usize::MAX;
        let mut rest = args.get(4..).unwrap_or_default().iter();
        while let Some(option) = rest.next() {
            let value = rest.next().map(|r| &frame[r.clone()]);
            let parsed = value
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<usize>().ok());
            match (&frame[option.clone()], parsed) {
                (name, Some(n)) if name.eq_ignore_ascii_case(b"count") => count = n,
                _ => {
                    out.extend_from_slice(TS_OPTIONS);
                    return None;
                }
            }
        }
        if self.server.query.window_spec().is_none() {
            out.extend_from_slice(TS_OFF);
            return None;
        }
        let series = match self.server.query.windows(arg(1), from, to) {
            Lookup::Found(series) => series,
            Lookup::NotFound => Vec::new(),
            Lookup::Elsewhere { owner, .. } if self.can_forward() => return Some(owner.resp_addr),
            other => {
                lookup_error(out, &other.map(|_| HelloState::default()));
                return None;
            }
        };
        let shown = series.len().min(count);
        let _ = write!(out, "*{shown}\r\n");
        for (start, counts) in series.iter().take(shown) {
            let _ = write!(out, "*2\r\n:{start}\r\n");
            match self.proto {
                Proto::Resp2 => bulk_u64(out, counts.hellos),
                Proto::Resp3 => {
                    let _ = write!(out, ",{}\r\n", counts.hellos);
                }
            }
        }
        None
    }

    /// The key's state when this instance owns it (and, with a bound, has reached it); its
    /// owner when that is another instance and forwarding is on (the owner checks the
    /// bound); otherwise writes the error reply (`-MOVED` among them).
    fn local(&self, key: &[u8], bound: Option<ReadBound>, out: &mut Vec<u8>) -> Local {
        // Position first: the state read after it is at least as new.
        let position = bound.map(|_| self.server.query.position_of(key));
        let lookup = self.server.query.lookup(key);
        if let (Some(bound), Some(position)) = (bound, position) {
            let behind = position.is_none_or(|p| p.offset < bound.after);
            // Owned here (or about to be): worth waiting for. An invalid key or a failed
            // store gets its error at once, and an owner elsewhere checks the bound itself.
            let here = matches!(
                lookup,
                Lookup::Found(_)
                    | Lookup::NotFound
                    | Lookup::Restoring { .. }
                    | Lookup::Unavailable { .. }
            );
            if behind && here {
                return Local::Wait(bound);
            }
        }
        match lookup {
            Lookup::Found(state) => Local::State(Some(state)),
            Lookup::NotFound => Local::State(None),
            Lookup::Elsewhere { owner, .. } if self.can_forward() => {
                Local::Forward(owner.resp_addr)
            }
            other => {
                lookup_error(out, &other);
                Local::Replied
            }
        }
    }

    /// Calls `each` for every key in order when all of them are local. Otherwise truncates
    /// `out` back to `mark` and either asks for forwarding (`Err(Some)`) or writes one error
    /// (`Err(None)`): MOVED when every key has the same remote owner (the client resends the
    /// whole command there), CROSSSLOT when they are spread.
    fn each_local(
        &self,
        frame: &[u8],
        keys: &[Range<usize>],
        out: &mut Vec<u8>,
        mark: usize,
        mut each: impl FnMut(&mut Vec<u8>, Option<&HelloState>),
    ) -> Result<(), Option<Forward>> {
        let mut local = 0_usize;
        let mut remote: Option<StateLookup> = None;
        let mut spread = false;
        for key in keys {
            match self.server.query.lookup(&frame[key.clone()]) {
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
                    return Err(None);
                }
            }
        }
        let Some(remote) = remote else {
            return Ok(());
        };
        out.truncate(mark);
        if self.can_forward() {
            return Err(Some(Forward::Many));
        }
        if local > 0 || spread {
            out.extend_from_slice(CROSSSLOT);
        } else {
            lookup_error(out, &remote);
        }
        Err(None)
    }

    /// Answers a read [`Session::execute`] handed back to wait for its bound: once the
    /// position is reached, as if asked then; otherwise `-NOTYET` with where it stands.
    pub(super) async fn wait(
        &mut self,
        bound: ReadBound,
        frame: &[u8],
        args: &[Range<usize>],
        out: &mut Vec<u8>,
    ) -> Flow {
        let key = &frame[args[1].clone()];
        let reached = wait_for_position(&*self.server.query, key, bound.after, bound.wait).await;
        let last = match reached {
            // The partition may have moved away in between; then say so rather than wait on.
            Ok(_) => match self.execute(frame, args, out) {
                Flow::Wait(_) => self.server.query.position_of(key),
                flow => return flow,
            },
            Err(last) => last,
        };
        not_yet(out, bound.after, last);
        Flow::Continue
    }

    /// Answers a command [`Session::execute`] handed back for forwarding.
    pub(super) async fn forward(
        &mut self,
        job: Forward,
        frame: &[u8],
        args: &[Range<usize>],
        out: &mut Vec<u8>,
    ) {
        let name = frame[args[0].clone()].to_ascii_lowercase();
        crate::telemetry::Metrics::inc(&self.server.stats.forwarded);
        match job {
            Forward::One(owner, wait) => {
                let argv: Vec<&[u8]> = args.iter().map(|r| &frame[r.clone()]).collect();
                match self.call(&owner, &argv, wait).await {
                    Ok(value) => write_value(out, &value, self.proto, name == b"hgetall"),
                    Err(()) => forward_failed(out),
                }
            }
            Forward::Many => {
                self.forward_many(name == b"exists", frame, &args[1..], out)
                    .await
            }
        }
    }

    /// MGET / EXISTS over keys of several instances: local keys read here, the others with
    /// one MGET per owner, answers put back in the order asked.
    async fn forward_many(
        &mut self,
        exists: bool,
        frame: &[u8],
        keys: &[Range<usize>],
        out: &mut Vec<u8>,
    ) {
        enum Slot {
            Here(Option<u64>),
            /// Owner index, position among that owner's keys.
            There(usize, usize),
        }
        let mut slots = Vec::with_capacity(keys.len());
        let mut owners: Vec<(String, Vec<&[u8]>)> = Vec::new();
        for range in keys {
            let key = &frame[range.clone()];
            match self.server.query.lookup(key) {
                Lookup::Found(state) => slots.push(Slot::Here(Some(state.hello_count))),
                Lookup::NotFound => slots.push(Slot::Here(None)),
                Lookup::Elsewhere { owner, .. } => {
                    let index = match owners.iter().position(|(addr, _)| *addr == owner.resp_addr) {
                        Some(index) => index,
                        None => {
                            owners.push((owner.resp_addr, Vec::new()));
                            owners.len() - 1
                        }
                    };
                    owners[index].1.push(key);
                    slots.push(Slot::There(index, owners[index].1.len() - 1));
                }
                other => return lookup_error(out, &other),
            }
        }
        let mut answers: Vec<Vec<Value>> = Vec::with_capacity(owners.len());
        for (addr, owned) in &owners {
            let mut argv: Vec<&[u8]> = Vec::with_capacity(owned.len() + 1);
            argv.push(b"MGET");
            argv.extend_from_slice(owned);
            match self.call(addr, &argv, Duration::ZERO).await {
                Ok(Value::Array(items)) if items.len() == owned.len() => answers.push(items),
                Ok(error @ Value::Error(_)) => return write_value(out, &error, self.proto, false),
                Ok(_) | Err(()) => return forward_failed(out),
            }
        }
        if exists {
            let found = slots
                .iter()
                .filter(|slot| match slot {
                    Slot::Here(count) => count.is_some(),
                    Slot::There(o, i) => answers[*o][*i] != Value::Nil,
                })
                .count();
            let _ = write!(out, ":{found}\r\n");
            return;
        }
        let _ = write!(out, "*{}\r\n", slots.len());
        for slot in &slots {
            match slot {
                Slot::Here(Some(count)) => bulk_u64(out, *count),
                Slot::Here(None) => nil(out, self.proto),
                Slot::There(o, i) => write_value(out, &answers[*o][*i], self.proto, false),
            }
        }
    }

    /// One forwarded command; an owner's `-MOVED` (ownership changed under us) becomes
    /// `-TRYAGAIN`, since our client is not a cluster client.
    async fn call(&self, owner: &str, argv: &[&[u8]], wait: Duration) -> Result<Value, ()> {
        let Some(forwarder) = &self.server.forwarder else {
            return Err(());
        };
        match forwarder.call(owner, argv, wait).await {
            Ok(Value::Error(text)) if text.starts_with(b"MOVED") => {
                Ok(Value::Error(MOVING.to_vec()))
            }
            Ok(value) => Ok(value),
            Err(error) => {
                warn!(client = self.id, %error, "forwarding a read failed");
                Err(())
            }
        }
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
            let status = self.server.query.status();
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
            let max = self.server.limits.max_connections;
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

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches the protocol, logs in
    /// and names the connection in one step, as Redis 6+ clients open.
    fn hello(&mut self, frame: &[u8], args: &[Range<usize>], out: &mut Vec<u8>) -> Flow {
        let arg = |i: usize| args.get(i).map(|r| &frame[r.clone()]);
        let proto = match arg(1) {
            None => self.proto,
            Some(b"2") => Proto::Resp2,
            Some(b"3") => Proto::Resp3,
            Some(v) if !v.is_empty() && v.iter().all(u8::is_ascii_digit) => {
                out.extend_from_slice(b"-NOPROTO unsupported protocol version\r\n");
                return Flow::Continue;
            }
            Some(_) => {
                out.extend_from_slice(
                    b"-ERR Protocol version is not an integer or out of range\r\n",
                );
                return Flow::Continue;
            }
        };
        let mut name = None;
        let mut i = 2;
        while let Some(option) = arg(i) {
            match (
                option.to_ascii_uppercase().as_slice(),
                arg(i + 1),
                arg(i + 2),
            ) {
                (b"AUTH", Some(user), Some(password)) => {
                    if !self.login(Some(user), password) {
                        return self.refuse_login(out);
                    }
                    i += 3;
                }
                (b"SETNAME", Some(value), _) => {
                    name = Some(value);
                    i += 2;
                }
                _ => {
                    out.extend_from_slice(b"-ERR Syntax error in HELLO option '");
                    push_printable(out, option);
                    out.extend_from_slice(b"'\r\n");
                    return Flow::Continue;
                }
            }
        }
        if !self.authenticated {
            out.extend_from_slice(HELLO_NOAUTH);
            return Flow::Continue;
        }
        if let Some(name) = name {
            if !set_name(&mut self.name, name) {
                out.extend_from_slice(BAD_NAME);
                return Flow::Continue;
            }
        }
        self.proto = proto;
        map_header(out, 7, proto);
        for (field, value) in [("server", "redis"), ("version", REDIS_VERSION)] {
            bulk(out, field.as_bytes());
            bulk(out, value.as_bytes());
        }
        let version = if proto == Proto::Resp3 { 3 } else { 2 };
        let _ = write!(
            out,
            "$5\r\nproto\r\n:{version}\r\n$2\r\nid\r\n:{}\r\n",
            self.id
        );
        for (field, value) in [("mode", "standalone"), ("role", "master")] {
            bulk(out, field.as_bytes());
            bulk(out, value.as_bytes());
        }
        out.extend_from_slice(b"$7\r\nmodules\r\n*0\r\n");
        Flow::Continue
    }

    /// `AUTH password` (the `default` user) or `AUTH user password`.
    fn auth(
        &mut self,
        first: Option<&[u8]>,
        second: Option<&[u8]>,
        argc: usize,
        out: &mut Vec<u8>,
    ) -> Flow {
        let (user, password) = match (argc, first, second) {
            (2, Some(password), _) => (None, password),
            (3, Some(user), Some(password)) => (Some(user), password),
            _ => {
                out.extend_from_slice(b"-ERR syntax error\r\n");
                return Flow::Continue;
            }
        };
        if !self.server.auth.required() {
            out.extend_from_slice(NO_PASSWORD);
            return Flow::Continue;
        }
        if !self.login(user, password) {
            return self.refuse_login(out);
        }
        ok(out);
        Flow::Continue
    }

    /// Checks a login and remembers the outcome.
    fn login(&mut self, user: Option<&[u8]>, password: &[u8]) -> bool {
        // Without users configured, `default` has no password (Redis' `nopass`).
        let default_user = user.is_none_or(|u| u == b"default");
        if (!self.server.auth.required() && default_user) || self.server.auth.check(user, password)
        {
            self.authenticated = true;
            return true;
        }
        self.failed_logins += 1;
        debug!(
            client = self.id,
            failures = self.failed_logins,
            "resp login failed"
        );
        false
    }

    /// `-WRONGPASS`, and the connection closes after too many failures.
    fn refuse_login(&self, out: &mut Vec<u8>) -> Flow {
        out.extend_from_slice(WRONGPASS);
        if self.failed_logins >= MAX_FAILED_LOGINS {
            return Flow::Close;
        }
        Flow::Continue
    }

    fn client(
        &mut self,
        sub: &[u8],
        value: Option<&[u8]>,
        extra: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        match (sub.to_ascii_uppercase().as_slice(), value) {
            (b"SETNAME", Some(name)) => {
                if set_name(&mut self.name, name) {
                    ok(out);
                } else {
                    out.extend_from_slice(BAD_NAME);
                }
            }
            (b"GETNAME", None) => match &self.name {
                Some(name) => bulk(out, name),
                None => nil(out, self.proto),
            },
            (b"ID", None) => {
                let _ = write!(out, ":{}\r\n", self.id);
            }
            // Clients send their library name and version; only our own forwarder's matters.
            (b"SETINFO", Some(attribute)) => {
                if attribute.eq_ignore_ascii_case(b"LIB-NAME") && extra == Some(FORWARD_CLIENT) {
                    self.forwarding_peer = true;
                }
                ok(out);
            }
            _ => {
                out.extend_from_slice(b"-ERR unknown or malformed CLIENT subcommand '");
                push_printable(out, sub);
                out.extend_from_slice(b"'\r\n");
            }
        }
    }
}

/// Keeps a client name when it is short and printable (Redis also refuses spaces).
fn set_name(slot: &mut Option<Vec<u8>>, name: &[u8]) -> bool {
    if name.len() > MAX_CLIENT_NAME || !name.iter().all(u8::is_ascii_graphic) {
        return false;
    }
    *slot = (!name.is_empty()).then(|| name.to_vec());
    true
}

/// Parses `AFTER <offset> [WAITMS <ms>]`, in either order; `None` for anything else.
fn read_bound(frame: &[u8], options: &[Range<usize>], max_wait: Duration) -> Option<ReadBound> {
    let mut after = None;
    let mut wait = Duration::ZERO;
    for pair in options.chunks(2) {
        let [name, value] = pair else {
            return None;
        };
        let value = std::str::from_utf8(&frame[value.clone()]).ok()?;
        let name = &frame[name.clone()];
        if name.eq_ignore_ascii_case(b"AFTER") {
            after = Some(value.parse::<i64>().ok()?);
        } else if name.eq_ignore_ascii_case(b"WAITMS") {
            wait = Duration::from_millis(value.parse::<u64>().ok()?).min(max_wait);
        } else {
            return None;
        }
    }
    Some(ReadBound {
        after: after?,
        wait,
    })
}

/// The read's bound was not reached in time: never a stale answer, but where it stands.
fn not_yet(out: &mut Vec<u8>, after: i64, position: Option<Position>) {
    let _ = match position {
        Some(p) => write!(
            out,
            "-NOTYET partition {} has applied input up to offset {}, not yet {after}\r\n",
            p.partition, p.offset
        ),
        None => write!(
            out,
            "-NOTYET the key's partition has applied nothing here yet, not yet {after}\r\n"
        ),
    };
}

fn forward_failed(out: &mut Vec<u8>) {
    out.extend_from_slice(b"-TRYAGAIN the key's owner did not answer; try again\r\n");
}

fn wrong_arity(out: &mut Vec<u8>, name: &str) {
    let _ = write!(
        out,
        "-ERR wrong number of arguments for '{name}' command\r\n"
    );
}
