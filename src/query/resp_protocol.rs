//! The RESP2/RESP3 wire format and the command vocabulary of the read-only server: parsing
//! requests (arrays of bulk strings and inline commands), encoding replies, and the table of
//! commands with their arity and `COMMAND` metadata. Pure code, no I/O, and nothing of the
//! server: [`super::resp`] uses this, never the other way round.
//!
//! The parser never copies: it returns the arguments as byte ranges of the caller's buffer,
//! which the connection reuses, so a parsed command costs no allocation. It never panics on
//! any input and reports a [`ProtocolError`] for anything a Redis server would reject.

use std::io::Write as _;
use std::ops::Range;

use super::Lookup;
use crate::hello::domain::HelloState;

/// Longest inline command line, as Redis' `PROTO_INLINE_MAX_SIZE`.
const MAX_INLINE_BYTES: usize = 64 * 1024;

// ---- requests ----

/// How large one command may be: the parser's share of the server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RequestLimits {
    /// Largest single command (all its arguments) in bytes.
    pub(super) max_request_bytes: usize,
    /// Most arguments in one command, the name included.
    pub(super) max_args: usize,
}

/// One step of the parser over the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parsed {
    /// A whole command of this many bytes; its arguments are ranges of the buffer. Zero
    /// arguments (an empty line, `*0`) is a command that gets no reply, as in Redis.
    Command(usize),
    /// More bytes are needed.
    Incomplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum ProtocolError {
    #[error("invalid multibulk length")]
    MultibulkLength,
    #[error("too many arguments: {count}, at most {max}")]
    TooManyArgs { count: i64, max: usize },
    #[error("expected '$', got byte 0x{0:02x}")]
    ExpectedBulk(u8),
    #[error("invalid bulk length")]
    BulkLength,
    #[error("bulk string not followed by CRLF")]
    MissingCrlf,
    #[error("request larger than {max} bytes")]
    TooLarge { max: usize },
}

/// Parses the first command of `buf` into `args`: a RESP array of bulk strings when it starts
/// with `*`, otherwise an inline command (a line of space-separated words, as telnet sends).
/// Inline commands have no quoting: a word is any run of bytes without space or tab.
pub(super) fn parse_command(
    buf: &[u8],
    limits: &RequestLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    args.clear();
    let parsed = match buf.first() {
        None => return Ok(Parsed::Incomplete),
        Some(b'*') => parse_array(buf, limits, args)?,
        Some(_) => parse_inline(buf, limits, args)?,
    };
    let size = match parsed {
        Parsed::Command(len) => len,
        Parsed::Incomplete => {
            // Arguments parsed so far are dropped: the command is parsed again when more
            // bytes arrive. Its size so far is the whole buffer.
            args.clear();
            buf.len()
        }
    };
    if size > limits.max_request_bytes {
        return Err(ProtocolError::TooLarge {
            max: limits.max_request_bytes,
        });
    }
    Ok(parsed)
}

fn parse_array(
    buf: &[u8],
    limits: &RequestLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    let Some((count, mut pos)) = header_int(buf, 1, ProtocolError::MultibulkLength)? else {
        return Ok(Parsed::Incomplete);
    };
    if count <= 0 {
        return Ok(Parsed::Command(pos));
    }
    if count as u64 > limits.max_args as u64 {
        return Err(ProtocolError::TooManyArgs {
            count,
            max: limits.max_args,
        });
    }
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(Parsed::Incomplete),
            Some(b'$') => {}
            Some(&other) => return Err(ProtocolError::ExpectedBulk(other)),
        }
        let Some((len, data)) = header_int(buf, pos + 1, ProtocolError::BulkLength)? else {
            return Ok(Parsed::Incomplete);
        };
        // Checked before waiting for the data, so a huge length fails at once.
        if len < 0 || len as u64 > limits.max_request_bytes as u64 {
            return Err(ProtocolError::BulkLength);
        }
        let end = data + len as usize;
        match buf.get(end..end + 2) {
            None => return Ok(Parsed::Incomplete),
            Some(b"\r\n") => {}
            Some(_) => return Err(ProtocolError::MissingCrlf),
        }
        args.push(data..end);
        pos = end + 2;
    }
    Ok(Parsed::Command(pos))
}

/// Reads the decimal of a `*N\r\n` or `$N\r\n` header whose digits start at `pos`; returns
/// the value and the position after the CRLF, or `None` when the line is not all there.
fn header_int(
    buf: &[u8],
    pos: usize,
    error: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let negative = buf.get(pos) == Some(&b'-');
    let digits = pos + usize::from(negative);
    let mut value: i64 = 0;
    let mut i = digits;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(b'\r') => break,
            Some(&d) if d.is_ascii_digit() => {
                // Overflow doubles as the bound on the number of digits.
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(i64::from(d - b'0')))
                    .ok_or(error)?;
                i += 1;
            }
            Some(_) => return Err(error),
        }
    }
    if i == digits {
        return Err(error);
    }
    match buf.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((if negative { -value } else { value }, i + 2))),
        Some(_) => Err(error),
    }
}

fn parse_inline(
    buf: &[u8],
    limits: &RequestLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Parsed, ProtocolError> {
    let Some(newline) = buf
        .iter()
        .take(MAX_INLINE_BYTES + 1)
        .position(|&b| b == b'\n')
    else {
        if buf.len() > MAX_INLINE_BYTES {
            return Err(ProtocolError::TooLarge {
                max: MAX_INLINE_BYTES,
            });
        }
        return Ok(Parsed::Incomplete);
    };
    let line_end = if newline > 0 && buf[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    let mut word_start = None;
    for (i, &byte) in buf[..line_end].iter().enumerate() {
        let blank = byte == b' ' || byte == b'\t';
        match (word_start, blank) {
            (None, false) => word_start = Some(i),
            (Some(start), true) => {
                args.push(start..i);
                word_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = word_start {
        args.push(start..line_end);
    }
    if args.len() > limits.max_args {
        return Err(ProtocolError::TooManyArgs {
            count: args.len() as i64,
            max: limits.max_args,
        });
    }
    Ok(Parsed::Command(newline + 1))
}

// ---- replies ----

pub(super) fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

/// The protocol a connection speaks: RESP2 until the client says `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// "No value": RESP2's null bulk string, RESP3's null.
pub(super) fn nil(out: &mut Vec<u8>, proto: Proto) {
    out.extend_from_slice(match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    });
}

/// The header of a map of `pairs` entries: RESP3 has a map type, RESP2 a flat array.
pub(super) fn map_header(out: &mut Vec<u8>, pairs: usize, proto: Proto) {
    match proto {
        Proto::Resp2 => out.push(b'*'),
        Proto::Resp3 => out.push(b'%'),
    }
    let entries = if proto == Proto::Resp2 {
        pairs * 2
    } else {
        pairs
    };
    push_u64(out, entries as u64);
    out.extend_from_slice(b"\r\n");
}

pub(super) fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    push_u64(out, data.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// A counter as a bulk string of its decimal digits (what `GET` returns in Redis).
pub(super) fn bulk_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0_u8; 20];
    let text = format_u64(value, &mut digits);
    out.push(b'$');
    push_u64(out, text.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0_u8; 20];
    out.extend_from_slice(format_u64(value, &mut digits));
}

/// Formats without `fmt` machinery: the GET path runs this twice per reply.
fn format_u64(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// Copies text into an error or status line, which must not contain a line break.
pub(super) fn push_line(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Echoes client bytes (a command name) into an error line: printable ASCII, bounded.
pub(super) fn push_printable(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .take(128)
            .map(|&b| if b.is_ascii_graphic() { b } else { b'?' }),
    );
}

fn decimal_len(value: i64) -> usize {
    let sign = usize::from(value < 0);
    sign + value
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1)
}

pub(super) fn lookup_error<T>(out: &mut Vec<u8>, lookup: &Lookup<T>) {
    let (prefix, text): (&[u8], &str) = match lookup {
        Lookup::Restoring {
            partition,
            restored,
            total,
        } => {
            let _ = write!(
                out,
                "-TRYAGAIN partition {partition} is restoring ({restored}/{total} records)"
            );
            (b"", "")
        }
        Lookup::Elsewhere { partition, owner } => {
            let _ = write!(out, "-MOVED {partition} ");
            (b"", &owner.resp_addr)
        }
        Lookup::Unavailable { partition } => {
            let _ = write!(
                out,
                "-TRYAGAIN partition {partition} has no owner right now"
            );
            (b"", "")
        }
        Lookup::InvalidKey(message) => (b"-ERR invalid key: ", message),
        Lookup::Failed(message) => (b"-ERR store read failed: ", message),
        // Callers answer the local cases themselves.
        Lookup::Found(_) | Lookup::NotFound => (b"-ERR internal error: unexpected lookup", ""),
    };
    out.extend_from_slice(prefix);
    // Addresses and messages come from elsewhere; a line break in them would end the reply.
    push_line(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The hash fields of a key's state, in `HGETALL` order.
pub(super) const FIELDS: [&str; 5] = [
    "helloCount",
    "helloTotalCount",
    "mood",
    "revision",
    "updatedAt",
];

pub(super) fn write_field(out: &mut Vec<u8>, state: &HelloState, field: &str) {
    match field {
        "helloCount" => bulk_u64(out, state.hello_count),
        "helloTotalCount" => bulk_u64(out, state.hello_total_count),
        "mood" => bulk(out, state.mood.as_str().as_bytes()),
        "revision" => bulk_u64(out, state.revision),
        _ => {
            let updated_at = state.updated_at_ms;
            let _ = write!(out, "${}\r\n{updated_at}\r\n", decimal_len(updated_at));
        }
    }
}

// ---- commands ----

pub(super) struct CommandSpec {
    pub(super) name: &'static str,
    /// Redis' convention: N means exactly N arguments with the name, -N at least N.
    pub(super) arity: i32,
    flags: &'static [&'static str],
    /// First key, last key, step, as `COMMAND` reports them.
    keys: (i32, i32, i32),
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
    }
}

const READ_FAST: &[&str] = &["readonly", "fast"];
const ADMIN: &[&str] = &["loading", "stale"];
const NO_KEYS: (i32, i32, i32) = (0, 0, 0);

/// The commands served, most frequent first (dispatch scans this list).
pub(super) const COMMANDS: &[CommandSpec] = &[
    spec("get", 2, READ_FAST, (1, 1, 1)),
    spec("mget", -2, READ_FAST, (1, -1, 1)),
    spec("hgetall", 2, &["readonly"], (1, 1, 1)),
    spec("hget", 3, READ_FAST, (1, 1, 1)),
    spec("exists", -2, READ_FAST, (1, -1, 1)),
    spec("ts.range", -4, &["readonly"], (1, 1, 1)),
    spec("ping", -1, &["fast"], NO_KEYS),
    spec("echo", 2, &["fast"], NO_KEYS),
    spec("quit", -1, &["fast"], NO_KEYS),
    spec("info", -1, ADMIN, NO_KEYS),
    spec("command", -1, ADMIN, NO_KEYS),
    spec("hello", -1, ADMIN, NO_KEYS),
    spec("client", -2, ADMIN, NO_KEYS),
    spec("select", 2, ADMIN, NO_KEYS),
    spec("config", -2, ADMIN, NO_KEYS),
    spec("dbsize", 1, READ_FAST, NO_KEYS),
    spec("auth", -2, &["fast", "no-auth"], NO_KEYS),
];

pub(super) fn find_command(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| name.eq_ignore_ascii_case(c.name.as_bytes()))
}

/// Commands that would change data: refused with a clear read-only error, not "unknown".
pub(super) const WRITE_COMMANDS: &str =
    "set setnx setex psetex mset msetnx getset getdel getex append \
    setrange incr incrby incrbyfloat decr decrby del unlink expire pexpire expireat pexpireat \
    persist rename renamenx move copy restore hset hsetnx hmset hdel hincrby hincrbyfloat lpush \
    rpush lpushx rpushx lpop rpop lset lrem ltrim linsert lmove rpoplpush sadd srem spop smove \
    zadd zrem zincrby setbit pfadd xadd xdel flushall flushdb swapdb eval evalsha fcall";

/// `COMMAND` replies: a 6-field entry (name, arity, flags, first key, last key, step) per
/// command, which is what clients read to find key positions.
pub(super) fn command(
    sub: Option<&[u8]>,
    frame: &[u8],
    names: &[Range<usize>],
    proto: Proto,
    out: &mut Vec<u8>,
) {
    let entry = |out: &mut Vec<u8>, spec: &CommandSpec| {
        out.extend_from_slice(b"*6\r\n");
        bulk(out, spec.name.as_bytes());
        let _ = write!(out, ":{}\r\n*{}\r\n", spec.arity, spec.flags.len());
        for flag in spec.flags {
            let _ = write!(out, "+{flag}\r\n");
        }
        let (first, last, step) = spec.keys;
        let _ = write!(out, ":{first}\r\n:{last}\r\n:{step}\r\n");
    };
    let Some(sub) = sub else {
        let _ = write!(out, "*{}\r\n", COMMANDS.len());
        COMMANDS.iter().for_each(|spec| entry(out, spec));
        return;
    };
    match sub.to_ascii_uppercase().as_slice() {
        b"COUNT" => {
            let _ = write!(out, ":{}\r\n", COMMANDS.len());
        }
        // redis-cli asks for docs to show hints; having none is fine.
        b"DOCS" => out.extend_from_slice(b"*0\r\n"),
        b"LIST" => {
            let _ = write!(out, "*{}\r\n", COMMANDS.len());
            COMMANDS
                .iter()
                .for_each(|spec| bulk(out, spec.name.as_bytes()));
        }
        b"INFO" => {
            let _ = write!(out, "*{}\r\n", names.len());
            for name in names {
                match find_command(&frame[name.clone()]) {
                    Some(spec) => entry(out, spec),
                    None => nil(out, proto),
                }
            }
        }
        _ => {
            out.extend_from_slice(b"-ERR unknown subcommand '");
            push_printable(out, sub);
            out.extend_from_slice(b"'\r\n");
        }
    }
}

/// `CONFIG GET` for what redis-benchmark asks at start (`save`, `appendonly`): this server
/// persists through Kafka, so neither applies.
pub(super) fn config(sub: &[u8], parameter: Option<&[u8]>, proto: Proto, out: &mut Vec<u8>) {
    let value: &[u8] = match parameter {
        _ if !sub.eq_ignore_ascii_case(b"GET") => {
            out.extend_from_slice(b"-ERR only CONFIG GET is supported\r\n");
            return;
        }
        None => {
            out.extend_from_slice(b"-ERR wrong number of arguments for 'config|get' command\r\n");
            return;
        }
        Some(p) if p.eq_ignore_ascii_case(b"save") => b"",
        Some(p) if p.eq_ignore_ascii_case(b"appendonly") => b"no",
        Some(_) => return map_header(out, 0, proto),
    };
    map_header(out, 1, proto);
    bulk(out, &parameter.unwrap_or_default().to_ascii_lowercase());
    bulk(out, value);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_request_bytes: 1024,
        max_args: 8,
    };

    type Args = Vec<Vec<u8>>;

    fn parse(buf: &[u8]) -> Result<(Parsed, Args), ProtocolError> {
        let mut ranges = Vec::new();
        let parsed = parse_command(buf, &LIMITS, &mut ranges)?;
        Ok((
            parsed,
            ranges.into_iter().map(|r| buf[r].to_vec()).collect(),
        ))
    }

    fn args(words: &[&str]) -> Args {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            bulk(&mut out, arg);
        }
        out
    }

    #[test]
    fn parses_arrays_and_inline_commands() {
        let get = b"*2\r\n$3\r\nGET\r\n$5\r\nalice\r\n";
        assert_eq!(
            parse(get),
            Ok((Parsed::Command(24), args(&["GET", "alice"])))
        );
        // Only the first of two pipelined commands is parsed.
        assert_eq!(parse(&[&get[..], &get[..]].concat()), parse(get));
        assert_eq!(
            parse(b"*1\r\n$4\r\na\r\nb\r\n"),
            Ok((Parsed::Command(14), vec![b"a\r\nb".to_vec()]))
        );
        assert_eq!(
            parse(b"GET alice\r\n"),
            Ok((Parsed::Command(11), args(&["GET", "alice"])))
        );
        assert_eq!(
            parse(b"  get\talice  \nPING"),
            Ok((Parsed::Command(14), args(&["get", "alice"])))
        );
        // Empty commands are consumed without arguments, so they get no reply.
        assert_eq!(parse(b"\r\n"), Ok((Parsed::Command(2), vec![])));
        assert_eq!(parse(b"*0\r\n"), Ok((Parsed::Command(4), vec![])));
        assert_eq!(parse(b"*-1\r\n"), Ok((Parsed::Command(5), vec![])));
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete() {
        let get = b"*2\r\n$3\r\nGET\r\n$5\r\nalice\r\n";
        for end in 0..get.len() {
            assert_eq!(
                parse(&get[..end]),
                Ok((Parsed::Incomplete, vec![])),
                "{end}"
            );
        }
        assert_eq!(parse(b"GET ali").map(|p| p.0), Ok(Parsed::Incomplete));
    }

    #[test]
    fn malformed_requests_are_protocol_errors() {
        use ProtocolError::*;
        let too_many = TooManyArgs {
            count: 99_999_999_999,
            max: 8,
        };
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*99999999999\r\n", too_many),
            (b"*99999999999999999999999\r\n", MultibulkLength),
            (b"*x\r\n", MultibulkLength),
            (b"*\r\n", MultibulkLength),
            (b"*1\n", MultibulkLength),
            (b"*1\rx", MultibulkLength),
            (b"*1\r\n+PING\r\n", ExpectedBulk(b'+')),
            (b"*1\r\n$-1\r\n", BulkLength),
            (b"*1\r\n$2000\r\n", BulkLength),
            (b"*1\r\n$--3\r\n", BulkLength),
            (b"*1\r\n$3\r\nGETxx", MissingCrlf),
            (b"*9\r\n", TooManyArgs { count: 9, max: 8 }),
            (b"a b c d e f g h i\r\n", TooManyArgs { count: 9, max: 8 }),
        ];
        for (input, error) in cases {
            assert_eq!(parse(input), Err(*error), "{}", input.escape_ascii());
        }
        let long_line = vec![b'a'; 1025];
        assert_eq!(parse(&long_line), Err(TooLarge { max: 1024 }));
        let big = encode(&[vec![b'x'; 600], vec![b'y'; 600]]);
        assert_eq!(parse(&big), Err(TooLarge { max: 1024 }));
        assert_eq!(parse(&big[..1100]), Err(TooLarge { max: 1024 }));
    }

    #[test]
    fn integers_format_like_display() {
        for value in [0, 7, 10, 99, 1_700_000_000_123, u64::MAX] {
            let mut digits = [0; 20];
            assert_eq!(format_u64(value, &mut digits), value.to_string().as_bytes());
        }
        for value in [0, 9, -1, -10, 1_700_000_000_123, i64::MAX, i64::MIN] {
            assert_eq!(decimal_len(value), value.to_string().len(), "{value}");
        }
        let mut line = Vec::new();
        push_line(&mut line, b"a\r\nb");
        push_printable(&mut line, b" \xffc");
        assert_eq!(line, b"a  b??c");
    }

    /// Checks the parser's contract for one input: no panic, and a command's ranges lie
    /// inside the bytes it consumed.
    fn check_contract(input: &[u8]) {
        let mut ranges = Vec::new();
        match parse_command(input, &LIMITS, &mut ranges) {
            Ok(Parsed::Command(len)) => {
                assert!(len > 0 && len <= input.len());
                assert!(ranges.len() <= LIMITS.max_args);
                assert!(ranges.iter().all(|r| r.start <= r.end && r.end <= len));
            }
            Ok(Parsed::Incomplete) | Err(_) => {}
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // Bytes drawn mostly from the protocol's own alphabet reach deep into the parser.
        const ALPHABET: &[u8] = b"*$\r\n0123456789-+: GETa";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let len = (next() % 48) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 8 == 0 {
                        (r >> 8) as u8
                    } else {
                        ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                    }
                })
                .collect();
            check_contract(&input);
        }
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            check_contract(&input);
        }

        #[test]
        fn encoded_commands_round_trip(
            command in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
            trailing in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let encoded = encode(&command);
            let with_more = [&encoded[..], &trailing[..]].concat();
            prop_assert_eq!(parse(&with_more), Ok((Parsed::Command(encoded.len()), command)));
            for end in 0..encoded.len() {
                prop_assert_eq!(parse(&encoded[..end]), Ok((Parsed::Incomplete, vec![])));
            }
        }
    }
}
