//! The validated `[query]` knobs the servers run with: what a client can make them hold, and
//! how a read for another instance's key reaches it. `config.rs` fills these in.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// HTTP connections served at once; one more gets a 503 and is closed.
    pub http_max_connections: usize,
    /// Time a client has to send a request head, counted from the connection's start or the
    /// end of the previous response (so it is also the keep-alive idle timeout).
    pub http_header_timeout: Duration,
    /// Bound on answering one request, forwarding and `wait_ms` included.
    pub http_request_timeout: Duration,
    /// Largest request head; a request with a body is refused (the API has none).
    pub http_max_request_bytes: usize,
    /// After shutdown starts, connections get this long to finish; the rest are closed.
    pub shutdown_timeout: Duration,
    /// A RESP client that sends nothing for this long is disconnected (Redis' `timeout`).
    pub resp_idle_timeout: Option<Duration>,
    /// Reply bytes held for one RESP client before the server stops reading its commands.
    pub resp_output_buffer_bytes: usize,
    /// A RESP client that does not take its replies for this long is disconnected, as with
    /// Redis' `client-output-buffer-limit`.
    pub resp_output_timeout: Duration,
    /// Largest single RESP command.
    pub resp_max_request_bytes: usize,
    /// Longest `wait_ms` a read may ask for.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            http_max_connections: 4096,
            http_header_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(10),
            http_max_request_bytes: 16 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            resp_idle_timeout: Some(Duration::from_secs(300)),
            resp_output_buffer_bytes: 1024 * 1024,
            resp_output_timeout: Duration::from_secs(10),
            resp_max_request_bytes: 1024 * 1024,
            max_wait: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// Forward reads for keys owned elsewhere (one hop); off: redirect (HTTP 307, `-MOVED`).
    pub enabled: bool,
    pub timeout: Duration,
    /// Idle connections kept per owner.
    pub pool_size: usize,
    /// RESP user forwarding logs in as; empty: `default` (or the first user).
    pub user: String,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            enabled: true,
            timeout: Duration::from_secs(2),
            pool_size: 4,
            user: String::new(),
        }
    }
}
