//! A read-only Redis protocol server (RESP2, and RESP3 after `HELLO 3`), so `redis-cli`,
//! `redis-benchmark` and Redis client libraries can read the counters.
//!
//! A key's state is a hash (`HGETALL alice`), and `GET alice` is its `helloCount`. A key owned
//! by another instance is forwarded to its owner ([`super::resp_forward`]), or, with
//! forwarding off, answered `-MOVED <partition> <host:port>` so `redis-cli -c` follows it; a
//! restoring partition answers `-TRYAGAIN`. Writes are refused: state changes only through
//! the input topic. The commands themselves are [`super::resp_commands`], the wire format
//! [`super::resp_protocol`].
//!
//! What one client can make the server hold is bounded as in Redis: `maxclients`, an idle
//! `timeout`, an output limit (past it the server writes before it reads on, and a client that
//! does not take its replies in time is disconnected), a command-size limit, and buffers that
//! shrink back when the connection goes quiet.
//!
//! This file holds the limits and the accept loop, which owns every connection task so that
//! shutdown can end them all; one client's loop is [`connection`], writing its replies under
//! the output limits [`output`], noticing that it went quiet [`quiet`]. With TLS the handshake
//! runs in the connection's task, within the handshake timeout and under its place in
//! `maxclients`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tracing::{debug, info, warn};

use super::accept::{accept, Accepted};
use super::auth::RespAuth;
use super::resp_forward::RespForwarder;
use super::resp_protocol::RequestLimits;
use super::tls::Tls;
use super::StateQuery;
use crate::shutdown::Shutdown;
use crate::telemetry::ServerStats;

#[cfg(test)]
mod command_tests;
mod connection;
mod output;
mod quiet;
#[cfg(test)]
mod test_server;

pub(super) use connection::Session;

const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";

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

impl RespLimits {
    /// The parser's part of the limits.
    fn request(&self) -> RequestLimits {
        RequestLimits {
            max_request_bytes: self.max_request_bytes,
            max_args: self.max_args,
        }
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
                let session = Session::new(server.clone(), next_id, permits.clone());
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    use super::test_server::{connect, start, talk, until_closed, WAIT};
    use super::*;

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
}
