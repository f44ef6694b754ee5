//! The HTTP port while the daemon waits for Kafka: `/healthz` answers (the process is alive,
//! a liveness probe must not restart it for waiting), `/readyz` and everything else answer
//! 503 with what the start waits for. The real API takes the same listener over once the
//! topics are known, so no client ever finds the port closed. With `[query.tls]` it speaks
//! TLS from the first connection on, as the real server will: a plain answer on the HTTPS
//! port would teach clients the wrong scheme.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::kafka::connect::Progress;
use crate::query::tls::Tls;

/// A client gets this long to send its request head; nothing here is worth waiting for.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers on the HTTP listener until [`StartupServer::finish`] takes it back.
pub struct StartupServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<TcpListener>,
}

pub fn serve(
    listener: TcpListener,
    bootstrap_servers: String,
    progress: Arc<Progress>,
    tls: Option<Arc<Tls>>,
) -> StartupServer {
    let waiting = move || {
        let (attempts, last_error) = progress.get();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "starting": "waiting for kafka",
                "bootstrapServers": bootstrap_servers,
                "failedAttempts": attempts,
                "lastError": last_error,
            })),
        )
            .into_response()
    };
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(move || {
            let answer: Response = waiting();
            async move { answer }
        });
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = &mut stopped => return listener,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let router = router.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => answer(stream, router).await,
                            Some(tls) => {
                                if let Ok(stream) = tls.accept(stream).await {
                                    answer(stream, router).await;
                                }
                            }
                        }
                    });
                }
            }
        }
    });
    StartupServer { stop, task }
}

/// One request a connection: the real server owns the next ones.
async fn answer<S>(stream: S, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        .await;
}

impl StartupServer {
    /// Stops answering and returns the listener.
    pub async fn finish(self) -> std::io::Result<TcpListener> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)
    }
}
