//! `hello-streams query KEY`: a minimal HTTP/1.1 client for the instance's own API, so the
//! command needs no HTTP library. Follows one redirect (the key's owner).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("bad url {0}; expected http://host:port")]
    Url(String),
    #[error("malformed response from {0}")]
    Response(String),
}

/// Returns the status code and body of `GET /v1/state/{key}`.
pub fn get_state(base_url: &str, key: &str) -> Result<(u16, String), ClientError> {
    let mut url = format!(
        "{}/v1/state/{}",
        base_url.trim_end_matches('/'),
        encode(key)
    );
    for _ in 0..2 {
        let (status, location, body) = get(&url)?;
        match (status, location) {
            (301 | 302 | 307 | 308, Some(next)) => url = next,
            _ => return Ok((status, body)),
        }
    }
    Err(ClientError::Response(url))
}

fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn get(url: &str) -> Result<(u16, Option<String>, String), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.into()))?;
    let (addr, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let connect = |source| ClientError::Connect {
        addr: addr.into(),
        source,
    };
    let mut stream = TcpStream::connect(addr).map_err(connect)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(connect)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(connect)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(connect)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::Response(url.into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Response(url.into()))?;
    let location = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    });
    Ok((status, location, body.to_owned()))
}
