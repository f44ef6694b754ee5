//! Sends a read for a key owned elsewhere to its owner's RESP server and brings back the
//! reply, so a plain (non-cluster) Redis client gets its answer from any instance.
//!
//! Bounded: one hop (the connection names itself [`FORWARD_CLIENT`], and the owner never
//! forwards for such a client), a timeout per call, and a small pool of idle connections per
//! owner. Forwarding logs in like any client when the owners require a password, and
//! speaks TLS when the servers do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::Secret;
use super::resp_protocol::bulk;
use super::resp_reply::{parse_reply, MalformedReply, Value};
use super::settings::Forwarding;
use super::tls::Tls;

/// The library name a forwarding connection announces (`CLIENT SETINFO LIB-NAME`).
pub const FORWARD_CLIENT: &[u8] = b"hello-streams-forward";

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("owner {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("owner {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("owner {addr} sent a malformed reply")]
    Malformed { addr: String },
    #[error("owner {addr} refused the login: {reply}")]
    Login { addr: String, reply: String },
}

/// A connection to an owner: plain TCP or TLS over it.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

struct Conn {
    stream: Box<dyn Duplex>,
    buf: Vec<u8>,
}

pub struct RespForwarder {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
    timeout: Duration,
    pool_size: usize,
    login: Option<(String, Secret)>,
    tls: Option<Arc<Tls>>,
}

enum Failure {
    Io(std::io::Error),
    Malformed,
    Login(String),
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

impl From<MalformedReply> for Failure {
    fn from(_: MalformedReply) -> Self {
        Failure::Malformed
    }
}

impl RespForwarder {
    pub fn new(
        settings: &Forwarding,
        login: Option<(String, Secret)>,
        tls: Option<Arc<Tls>>,
    ) -> Self {
        RespForwarder {
            idle: Mutex::new(HashMap::new()),
            timeout: settings.timeout,
            pool_size: settings.pool_size,
            login,
            tls,
        }
    }

    /// Sends `args` as one command to `addr` and returns its reply, within the forwarding
    /// timeout plus `wait` (what the owner may wait for a position the read asked for). A
    /// pooled connection the owner has closed meanwhile fails at once; the call is then
    /// tried once on a new one.
    pub async fn call(
        &self,
        addr: &str,
        args: &[&[u8]],
        wait: Duration,
    ) -> Result<Value, ForwardError> {
        let exchange = async {
            if let Some(conn) = self.take(addr) {
                if let Ok(done) = self.exchange(conn, addr, args).await {
                    return Ok(done);
                }
            }
            let conn = self.connect(addr).await?;
            self.exchange(conn, addr, args).await
        };
        let bound = self.timeout + wait;
        match tokio::time::timeout(bound, exchange).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Io(source))) => Err(ForwardError::Io {
                addr: addr.to_owned(),
                source,
            }),
            Ok(Err(Failure::Malformed)) => Err(ForwardError::Malformed {
                addr: addr.to_owned(),
            }),
            Ok(Err(Failure::Login(reply))) => Err(ForwardError::Login {
                addr: addr.to_owned(),
                reply,
            }),
            Err(_) => Err(ForwardError::Timeout {
                addr: addr.to_owned(),
                timeout: bound,
            }),
        }
    }

    async fn exchange(&self, mut conn: Conn, addr: &str, args: &[&[u8]]) -> Result<Value, Failure> {
        let value = request(&mut conn, args).await?;
        self.put_back(addr, conn);
        Ok(value)
    }

    fn take(&self, addr: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(addr)?.pop()
    }

    fn put_back(&self, addr: &str, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let pool = idle.entry(addr.to_owned()).or_default();
        if pool.len() < self.pool_size {
            pool.push(conn);
        }
    }

    async fn connect(&self, addr: &str) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream: Box<dyn Duplex> = match &self.tls {
            Some(tls) => Box::new(tls.connect(addr, stream).await?),
            None => Box::new(stream),
        };
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        if let Some((user, password)) = &self.login {
            let auth: [&[u8]; 3] = [b"AUTH", user.as_bytes(), password.expose().as_bytes()];
            let reply = request(&mut conn, &auth).await?;
            if let Value::Error(text) = reply {
                return Err(Failure::Login(String::from_utf8_lossy(&text).into_owned()));
            }
        }
        let name: [&[u8]; 4] = [b"CLIENT", b"SETINFO", b"LIB-NAME", FORWARD_CLIENT];
        let reply = request(&mut conn, &name).await?;
        if let Value::Error(text) = reply {
            return Err(Failure::Login(String::from_utf8_lossy(&text).into_owned()));
        }
        Ok(conn)
    }
}

async fn request(conn: &mut Conn, args: &[&[u8]]) -> Result<Value, Failure> {
    let mut out = Vec::with_capacity(64);
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        bulk(&mut out, arg);
    }
    conn.stream.write_all(&out).await?;
    // TLS holds written bytes until flushed; plain TCP has nothing to flush.
    conn.stream.flush().await?;
    loop {
        if let Some((value, len)) = parse_reply(&conn.buf)? {
            conn.buf.drain(..len);
            return Ok(value);
        }
        if conn.stream.read_buf(&mut conn.buf).await? == 0 {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
