//! Runs HTTP/1.1 connections for the read API with every limit a client could push on:
//! a connection cap, a header-read (and keep-alive idle) timeout, a request-size limit, a
//! bound on each request, and a shutdown that closes what is left after a grace period.
//! With TLS the handshake is one more of them: it runs in the connection's task, under the
//! cap, within the handshake timeout.
//!
//! `axum::serve` runs hyper without a timer, so no header timeout applies there and a client
//! that sends half a request holds its connection (and the daemon's shutdown) forever; this
//! drives hyper's connection itself, with tokio's timer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tracing::{debug, info, warn};

use super::accept::{accept, Accepted};
use super::settings::Limits;
use super::tls::Tls;
use crate::shutdown::{self, Shutdown};
use crate::telemetry::ServerStats;

/// What a connection over the cap gets before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
    content-type: application/json\r\nretry-after: 1\r\ncontent-length: 35\r\n\r\n\
    {\"error\":\"too_many_connections\"}\r\n";

/// Serves `app` on `listener` until `shutdown` fires; then stops accepting, lets open
/// connections finish their request for up to `limits.shutdown_timeout`, and closes the rest.
/// With `tls`, each connection's handshake runs in its own task, under the cap and the
/// handshake timeout.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    stats: Arc<ServerStats>,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, max_connections = limits.http_max_connections, tls = tls.is_some(), "http query server listening");
    let permits = Arc::new(Semaphore::new(limits.http_max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.http_header_timeout)
        .max_buf_size(limits.http_max_request_bytes)
        .keep_alive(true);
    let (finish, finishing) = shutdown::channel();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    warn!(%error, "http connection task failed");
                }
            }
            accepted = accept(&listener, &permits, BUSY, "http", &stats) => {
                let Some(Accepted { stream, peer, permit, open }) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    builder: builder.clone(),
                    app: app.clone(),
                    stall_limit: limits.http_request_timeout,
                    finishing: finishing.clone(),
                    peer,
                };
                let tls = tls.clone();
                connections.spawn(async move {
                    let _held = (permit, open);
                    match tls {
                        None => connection.run(stream).await,
                        Some(tls) => connection.run_tls(&tls, stream).await,
                    }
                });
            }
        }
    }
    drop(listener);
    finish.fire();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            open = connections.len(),
            "closing http connections still open after the shutdown timeout"
        );
        connections.shutdown().await;
    }
    info!(%addr, "http query server stopped");
    Ok(())
}

/// One accepted connection, served over plain TCP or TLS.
struct Connection {
    builder: http1::Builder,
    app: Router,
    stall_limit: Duration,
    finishing: Shutdown,
    peer: SocketAddr,
}

impl Connection {
    async fn run_tls(mut self, tls: &Tls, stream: TcpStream) {
        let handshake = tokio::select! {
            done = tls.accept(stream) => done,
            _ = self.finishing.wait() => return,
        };
        match handshake {
            Ok(stream) => self.run(stream).await,
            Err(error) => debug!(peer = %self.peer, %error, "tls handshake failed"),
        }
    }

    async fn run<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(StallGuard::new(stream, self.stall_limit));
        let connection = self
            .builder
            .serve_connection(io, TowerToHyperService::new(self.app));
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(peer = %self.peer, %error, "http connection ended with an error");
                }
            }
            _ = self.finishing.wait() => {
                // Answers the request in flight, if any, then closes.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// A socket whose writes fail once they made no progress for `limit`. hyper has no write
/// timeout, and while it writes it reads nothing, so a client that pipelines requests and
/// never reads the responses would otherwise hold its connection until shutdown.
struct StallGuard<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome on; a pending write arms the stall timer, which turns into
    /// an error when it fires first.
    fn guard(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no response bytes within the request timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
