//! Replies as values: what a forwarded command's owner answered (RESP2), parsed so it can be
//! passed on in the protocol the client speaks. Pure code; never panics on any input.

use super::resp_protocol::{bulk, map_header, nil, push_line, Proto};

/// Deepest nesting accepted: our replies nest at most one level.
const MAX_DEPTH: usize = 4;
/// Most elements in one array: our widest reply is an MGET bounded by `max_args`.
const MAX_ELEMENTS: i64 = 1 << 20;
/// Longest bulk string: our values are short.
const MAX_BULK: i64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply")]
pub struct MalformedReply;

/// Parses the first reply of `buf`: the value and its length, or `None` when incomplete.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Value, usize)>, MalformedReply> {
    parse_at(buf, 0, 0)
}

fn parse_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(Value, usize)>, MalformedReply> {
    if depth > MAX_DEPTH {
        return Err(MalformedReply);
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(line_end) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..line_end];
    let next = line_end + 2;
    let value = match kind {
        b'+' => Value::Simple(line.to_vec()),
        b'-' => Value::Error(line.to_vec()),
        b':' => Value::Int(int(line)?),
        b'_' => Value::Nil,
        b'$' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if len > MAX_BULK {
                return Err(MalformedReply);
            }
            let end = next + len as usize;
            match buf.get(end..end + 2) {
                None => return Ok(None),
                Some(b"\r\n") => return Ok(Some((Value::Bulk(buf[next..end].to_vec()), end + 2))),
                Some(_) => return Err(MalformedReply),
            }
        }
        b'*' => {
            let count = int(line)?;
            if count < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if count > MAX_ELEMENTS {
                return Err(MalformedReply);
            }
            let mut items = Vec::with_capacity(count.min(1024) as usize);
            let mut at = next;
            for _ in 0..count {
                let Some((item, after)) = parse_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            return Ok(Some((Value::Array(items), at)));
        }
        _ => return Err(MalformedReply),
    };
    Ok(Some((value, next)))
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2).position(|w| w == b"\r\n").map(|i| from + i)
}

fn int(line: &[u8]) -> Result<i64, MalformedReply> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(MalformedReply)
}

/// Writes `value` for a client speaking `proto`; `as_map`: an array of field/value pairs
/// (HGETALL's reply) becomes a RESP3 map.
pub fn write_value(out: &mut Vec<u8>, value: &Value, proto: Proto, as_map: bool) {
    match value {
        Value::Simple(text) => {
            out.push(b'+');
            push_line(out, text);
            out.extend_from_slice(b"\r\n");
        }
        Value::Error(text) => {
            out.push(b'-');
            push_line(out, text);
            out.extend_from_slice(b"\r\n");
        }
        Value::Int(i) => {
            out.push(b':');
            out.extend_from_slice(i.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Value::Bulk(data) => bulk(out, data),
        Value::Nil => nil(out, proto),
        Value::Array(items) if as_map && items.len() % 2 == 0 => {
            map_header(out, items.len() / 2, proto);
            for item in items {
                write_value(out, item, proto, false);
            }
        }
        Value::Array(items) => {
            out.push(b'*');
            out.extend_from_slice(items.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            for item in items {
                write_value(out, item, proto, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_what_the_server_sends() {
        let reply = b"*3\r\n$1\r\n3\r\n$-1\r\n:7\r\n+OK\r\n";
        let (value, len) = parse_reply(reply).unwrap().unwrap();
        assert_eq!(
            value,
            Value::Array(vec![Value::Bulk(b"3".to_vec()), Value::Nil, Value::Int(7)])
        );
        assert_eq!(len, reply.len() - 5);
        for cut in 0..len {
            assert_eq!(parse_reply(&reply[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(
            parse_reply(b"-MOVED 1 a:1\r\n"),
            Ok(Some((Value::Error(b"MOVED 1 a:1".to_vec()), 14)))
        );
        assert!(parse_reply(b"?x\r\n").is_err());
        assert!(parse_reply(b"$3\r\nabcd\r\n").is_err());
    }

    #[test]
    fn hgetall_becomes_a_map_in_resp3() {
        let pairs = Value::Array(vec![Value::Bulk(b"k".to_vec()), Value::Bulk(b"v".to_vec())]);
        let mut out = Vec::new();
        write_value(&mut out, &pairs, Proto::Resp3, true);
        assert_eq!(out, b"%1\r\n$1\r\nk\r\n$1\r\nv\r\n");
        out.clear();
        write_value(&mut out, &pairs, Proto::Resp2, true);
        assert_eq!(out, b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n");
        out.clear();
        write_value(&mut out, &Value::Nil, Proto::Resp3, false);
        assert_eq!(out, b"_\r\n");
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_reply(&input);
        }
    }
}
