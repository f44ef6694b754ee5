//! Accepting under a connection cap, shared by both servers: a connection over the cap is
//! told so in one non-blocking write and closed, and a failed accept (usually out of file
//! descriptors) backs off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::telemetry::{Metrics, OpenConnection, ServerStats};

/// A connection to serve, holding its place under the cap until dropped.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub permit: OwnedSemaphorePermit,
    /// Counts the connection closed when dropped.
    pub open: OpenConnection,
}

/// The next connection under the cap; `None` when one was refused or the accept failed.
pub async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    refusal: &[u8],
    server: &'static str,
    stats: &Arc<ServerStats>,
) -> Option<Accepted> {
    let (stream, peer) = match listener.accept().await {
        Ok(accepted) => accepted,
        Err(error) => {
            warn!(server, %error, "accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            return None;
        }
    };
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        // A fresh socket's send buffer is empty, so this write goes through at once and the
        // accept loop never waits on a client it refuses.
        let _ = stream.try_write(refusal);
        Metrics::inc(&stats.refused);
        debug!(server, %peer, "connection refused: at the connection cap");
        return None;
    };
    Some(Accepted {
        stream,
        peer,
        permit,
        open: stats.opened(),
    })
}
