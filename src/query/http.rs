//! The HTTP (JSON) read API: `GET /v1/state/{key}`, `/v1/status`, `/metrics`, `/healthz`,
//! `/readyz`, the window reads of [`super::http_windows`] and the dashboard at `/`.
//!
//! Every answer comes from the [`StateQuery`]; this module maps a [`Lookup`] to a status code
//! and body, with the position the answer reflects (`?after=&wait_ms=` asks for a minimum,
//! for reading one's own writes). A key owned by another instance is forwarded to it (one
//! hop, [`super::http_forward`]) or, with forwarding off, answered with a 307 to it. The
//! connections and their limits are [`super::http_server`]'s job.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::{debug, warn};

use super::auth::HttpAuth;
use super::http_forward::{ForwardError, HttpForwarder, FORWARDED_HEADER};
use super::settings::Limits;
use super::tls::Tls;
use super::{wait_for_position, Lookup, Owner, Position, StateQuery, StateView};
use crate::hello::domain::validate_key;
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, ServerStats};

const STATE_PREFIX: &str = "/v1/state/";
/// The Prometheus text exposition format, as scrapers expect it.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers share.
pub struct Api {
    pub query: Arc<dyn StateQuery>,
    pub limits: Limits,
    pub auth: HttpAuth,
    /// `None`: keys owned elsewhere are answered with a redirect.
    pub forwarder: Option<HttpForwarder>,
    /// `Some`: connections speak TLS (and redirects say `https`).
    pub tls: Option<Arc<Tls>>,
    pub stats: Arc<ServerStats>,
}

pub(super) type Shared = Arc<Api>;

/// Serves the API on `listener` until `shutdown` fires, within the limits of `api.limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    shutdown: Shutdown,
) -> io::Result<()> {
    let limits = api.limits;
    let tls = api.tls.clone();
    let stats = api.stats.clone();
    super::http_server::serve(
        listener,
        router(Arc::new(api)),
        limits,
        tls,
        stats,
        shutdown,
    )
    .await
}

fn router(api: Shared) -> Router {
    Router::new()
        .route("/", get(super::dashboard::page))
        .route("/v1/state/{key}", get(get_state))
        .route("/v1/windows/{key}", get(super::http_windows::get_windows))
        .route("/v1/top", get(super::http_windows::get_top))
        .route("/v1/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(get_ready))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(api.clone(), gate))
        .with_state(api)
}

/// Runs before every route: refuses bodies (the API has none), checks the bearer token and
/// bounds the time a request may take.
async fn gate(State(api): State<Shared>, request: Request, next: Next) -> Response {
    Metrics::inc(&api.stats.requests);
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "body_not_allowed"}),
        );
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !api.auth.allows(request.uri().path(), authorization) {
        debug!(
            path = request.uri().path(),
            "http request refused: bad or missing token"
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            Json(json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    match tokio::time::timeout(api.limits.http_request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "timeout"})),
    }
}

pub(super) fn error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// `?after=<offset>&wait_ms=<n>`: answer only once the key's partition has applied input
/// offset `after`, waiting up to `wait_ms` (bounded by `query.max_wait_ms`) for it.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReadBound {
    after: Option<i64>,
    wait: Duration,
}

fn read_bound(query: Option<&str>, max_wait: Duration) -> Result<ReadBound, String> {
    let mut bound = ReadBound::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "after" => {
                let after = value
                    .parse::<i64>()
                    .map_err(|_| format!("after={value} is not an offset"))?;
                bound.after = Some(after);
            }
            "wait_ms" => {
                let ms = value
                    .parse::<u64>()
                    .map_err(|_| format!("wait_ms={value} is not a number"))?;
                bound.wait = Duration::from_millis(ms).min(max_wait);
            }
            _ => {}
        }
    }
    Ok(bound)
}

/// Waits (bounded) until the key's partition has applied input offset `after`; the answer to
/// give when it does not get there in time.
async fn await_position(
    api: &Api,
    key: &str,
    after: i64,
    wait: Duration,
) -> Result<Position, Response> {
    wait_for_position(&*api.query, key.as_bytes(), after, wait)
        .await
        .map_err(|position| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                Json(json!({"error": "not_yet", "after": after, "position": position})),
            )
                .into_response()
        })
}

/// Takes the key from the raw URI rather than axum's `Path`: `Path<String>` rejects a key that
/// decodes to invalid UTF-8 with a plain-text error, and we want the same JSON 400 as for
/// every other invalid key.
async fn get_state(State(api): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    // The route only matches `/v1/state/{one segment}`, so the prefix is always there.
    let raw = uri.path().strip_prefix(STATE_PREFIX).unwrap_or_default();
    let Some(bytes) = percent_decode(raw) else {
        return invalid_key("key is not validly percent-encoded");
    };
    let key = match validate_key(Some(&bytes)) {
        Ok(key) => key,
        Err(poison) => return invalid_key(&poison.message),
    };
    let bound = match read_bound(uri.query(), api.limits.max_wait) {
        Ok(bound) => bound,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_query", "message": message}),
            )
        }
    };
    // Position first: the state read after it is at least as new.
    let mut position = api.query.position_of(key.as_bytes());
    let mut lookup = api.query.lookup(key.as_bytes());
    if let Some(after) = bound.after {
        let behind = position.is_none_or(|p| p.offset < after);
        // A key owned elsewhere waits at its owner, which gets the same query.
        if behind && !matches!(lookup, Lookup::Elsewhere { .. }) {
            match await_position(&api, key, after, bound.wait).await {
                Ok(reached) => position = Some(reached),
                Err(not_yet) => return not_yet,
            }
            lookup = api.query.lookup(key.as_bytes());
        }
    }
    // A lookup is one RocksDB point read (microseconds), cheap enough to run on the runtime.
    match lookup {
        Lookup::Found(state) => {
            let mut body = serde_json::to_value(StateView::new(key, &state)).unwrap_or_default();
            body["position"] = json!(position);
            Json(body).into_response()
        }
        Lookup::NotFound => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "key": key, "position": position})),
        )
            .into_response(),
        other => not_here(&api, other, STATE_PREFIX, key, &uri, &headers, bound.wait).await,
    }
}

/// The answer for a key whose read did not find it here: invalid, restoring, owned
/// elsewhere (forwarded, or redirected to `prefix` + key at the owner), unavailable, failed.
pub(super) async fn not_here<T>(
    api: &Api,
    lookup: Lookup<T>,
    prefix: &str,
    key: &str,
    uri: &Uri,
    headers: &HeaderMap,
    wait: Duration,
) -> Response {
    match lookup {
        Lookup::InvalidKey(message) => invalid_key(&message),
        Lookup::Restoring {
            partition,
            restored,
            total,
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            Json(json!({"error": "restoring", "partition": partition, "restored": restored, "total": total})),
        )
            .into_response(),
        Lookup::Elsewhere { partition, owner } => {
            let forwarded = headers.contains_key(FORWARDED_HEADER);
            match &api.forwarder {
                Some(forwarder) if !forwarded => {
                    Metrics::inc(&api.stats.forwarded);
                    forward(forwarder, &owner, uri, wait).await
                }
                _ => redirect(api, partition, &owner, prefix, key, uri.query()),
            }
        }
        Lookup::Unavailable { partition } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "unavailable", "partition": partition})),
        )
            .into_response(),
        Lookup::Failed(message) => failed(&message),
        Lookup::Found(_) | Lookup::NotFound => failed("internal error: the key was found"),
    }
}

/// Passes the read to the key's owner and its answer back as it came.
async fn forward(forwarder: &HttpForwarder, owner: &Owner, uri: &Uri, wait: Duration) -> Response {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    match forwarder.get(&owner.http_addr, path, wait).await {
        Ok(answer) => {
            let mut response = (answer.status, answer.body).into_response();
            if let Some(content_type) = answer.content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        // An owner that cannot be reached is usually one that is leaving in a rebalance: a
        // retriable 503, as for a restoring partition (RESP answers -TRYAGAIN). Only an owner
        // that answers garbage is a gateway error.
        Err(cause @ (ForwardError::Timeout(_) | ForwardError::Request(_))) => {
            warn!(owner = %owner.http_addr, error = %cause, "forwarding a read failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                Json(json!({"error": "owner_unavailable", "owner": owner, "message": cause.to_string()})),
            )
                .into_response()
        }
        Err(cause) => {
            warn!(owner = %owner.http_addr, error = %cause, "forwarding a read failed");
            error(
                StatusCode::BAD_GATEWAY,
                json!({"error": "forward_failed", "owner": owner, "message": cause.to_string()}),
            )
        }
    }
}

/// A 307 to `path` + the key at the owner (`path`: `/v1/state/` or `/v1/windows/`).
fn redirect(
    api: &Api,
    partition: i32,
    owner: &Owner,
    path: &str,
    key: &str,
    query: Option<&str>,
) -> Response {
    // Instances of a group share their TLS settings, so the owner speaks what we speak.
    let scheme = if api.tls.is_some() { "https" } else { "http" };
    let mut location = format!(
        "{scheme}://{}{path}{}",
        owner.http_addr,
        percent_encode(key)
    );
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    let Ok(value) = HeaderValue::try_from(location.as_str()) else {
        // An owner announced an address that cannot be a URL; say so rather than send a
        // broken redirect.
        warn!(partition, addr = %owner.http_addr, "owner has an invalid http address");
        return failed(&format!(
            "owner of partition {partition} announced an invalid address"
        ));
    };
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, value)],
        Json(json!({"error": "elsewhere", "partition": partition, "owner": owner, "location": location})),
    )
        .into_response()
}

async fn get_status(State(api): State<Shared>) -> Response {
    Json(api.query.status()).into_response()
}

async fn get_metrics(State(api): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        api.query.metrics(),
    )
        .into_response()
}

async fn get_ready(State(api): State<Shared>) -> Response {
    if api.query.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn no_route(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no_route", "path": uri.path()})),
    )
        .into_response()
}

pub(super) fn invalid_key(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_key", "message": message})),
    )
        .into_response()
}

pub(super) fn failed(message: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "failed", "message": message})),
    )
        .into_response()
}

/// Decodes `%XX` escapes into raw bytes; `None` for a `%` not followed by two hex digits.
pub(super) fn percent_decode(segment: &str) -> Option<Vec<u8>> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = hex_value(*bytes.get(i + 1)?)?;
            let low = hex_value(*bytes.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Encodes everything but RFC 3986 unreserved characters, so any key is one path segment.
fn percent_encode(key: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
    }
    out
}

/// A [`StateQuery`] with fixed answers, shared by the HTTP and RESP server tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::hello::domain::{validate_key, HelloState, Mood};
    use crate::query::{Lookup, Owner, PartitionStatus, Position, StateLookup, StateQuery, Status};

    /// Keys: `alice` (3/7 HAPPY), `bob` (12/20 ANGRY), `restoring*`, `remote*` (owner node-b),
    /// `far*` (owner node-c), `orphan` (no owner), `broken` (store failure); any other valid
    /// key is not found.
    pub(crate) struct FakeQuery {
        pub(crate) ready: AtomicBool,
    }

    impl FakeQuery {
        pub(crate) fn new() -> Self {
            FakeQuery {
                ready: AtomicBool::new(true),
            }
        }
    }

    pub(crate) fn alice() -> HelloState {
        HelloState {
            hello_count: 3,
            hello_total_count: 7,
            mood: Mood::Happy,
            revision: 12,
            last_offset: 11,
            updated_at_ms: 1_700_000_000_123,
            reset_epoch: 0,
        }
    }

    pub(crate) fn owner(name: &str, host: &str) -> Owner {
        Owner {
            instance_id: name.to_owned(),
            http_addr: format!("{host}:8080"),
            resp_addr: format!("{host}:6380"),
        }
    }

    impl StateQuery for FakeQuery {
        fn lookup(&self, key: &[u8]) -> StateLookup {
            let key = match validate_key(Some(key)) {
                Ok(key) => key,
                Err(poison) => return Lookup::InvalidKey(poison.message),
            };
            match key {
                "alice" => Lookup::Found(alice()),
                "bob" => Lookup::Found(HelloState {
                    hello_count: 12,
                    hello_total_count: 20,
                    mood: Mood::Angry,
                    revision: 40,
                    ..alice()
                }),
                "orphan" => Lookup::Unavailable { partition: 4 },
                "broken" => Lookup::Failed("disk on fire".to_owned()),
                k if k.starts_with("restoring") => Lookup::Restoring {
                    partition: 2,
                    restored: 40,
                    total: 100,
                },
                k if k.starts_with("remote") => Lookup::Elsewhere {
                    partition: 1,
                    owner: owner("node-b", "10.0.0.2"),
                },
                k if k.starts_with("far") => Lookup::Elsewhere {
                    partition: 5,
                    owner: owner("node-c", "10.0.0.3"),
                },
                _ => Lookup::NotFound,
            }
        }

        fn status(&self) -> Status {
            Status {
                instance_id: "node-a".to_owned(),
                application_id: "hello-app".to_owned(),
                processing_guarantee: "exactly_once".to_owned(),
                input_partitions: 6,
                partitions: vec![PartitionStatus {
                    partition: 0,
                    state: "active",
                    restored: 0,
                    restore_total: 0,
                    lag: Some(0),
                    waiting_for_transaction_at: None,
                    stream_time: None,
                }],
                windows: None,
            }
        }

        fn metrics(&self) -> String {
            "# TYPE hello_streams_active_tasks gauge\nhello_streams_active_tasks 1\n".to_owned()
        }

        fn ready(&self) -> bool {
            self.ready.load(Ordering::Relaxed)
        }

        fn position_of(&self, key: &[u8]) -> Option<Position> {
            (key == b"alice" || key == b"nobody").then_some(Position {
                partition: 0,
                offset: 11,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::fake::FakeQuery;
    use super::*;
    use crate::shutdown::{self, Trigger};

    struct Server {
        addr: SocketAddr,
        query: Arc<FakeQuery>,
        trigger: Trigger,
        task: JoinHandle<io::Result<()>>,
    }

    async fn start() -> Server {
        start_with(Limits::default(), HttpAuth::default()).await
    }

    async fn start_with(limits: Limits, auth: HttpAuth) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let query = Arc::new(FakeQuery::new());
        let (trigger, shutdown) = shutdown::channel();
        let api = Api {
            query: query.clone(),
            limits,
            auth,
            forwarder: None,
            stats: Default::default(),
            tls: None,
        };
        let task = tokio::spawn(serve(listener, api, shutdown));
        Server {
            addr,
            query,
            trigger,
            task,
        }
    }

    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap()
        }
    }

    /// Sends raw bytes and reads until the server closes (the request asks it to).
    async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
            .await
            .expect("server answered in time")
            .unwrap();
        response
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let response = String::from_utf8(raw(addr, request.as_bytes()).await).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        Reply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn found_key_is_200_with_the_state() {
        let server = start().await;
        let reply = get(server.addr, "/v1/state/alice").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.json(),
            json!({"key": "alice", "helloCount": 3, "helloTotalCount": 7, "mood": "HAPPY",
                   "revision": 12, "updatedAt": 1_700_000_000_123_i64,
                   "position": {"partition": 0, "offset": 11}})
        );
    }

    #[tokio::test]
    async fn unknown_key_is_404() {
        let server = start().await;
        let reply = get(server.addr, "/v1/state/nob%6Fdy").await;
        assert_eq!(reply.status, 404);
        assert_eq!(
            reply.json(),
            json!({"error": "not_found", "key": "nobody", "position": {"partition": 0, "offset": 11}})
        );
    }

    #[tokio::test]
    async fn invalid_keys_are_400() {
        let server = start().await;
        let long = "k".repeat(256);
        for path in [
            "/v1/state/%FF%FE",
            "/v1/state/%zz",
            "/v1/state/%4",
            &format!("/v1/state/{long}"),
        ] {
            let reply = get(server.addr, path).await;
            assert_eq!(reply.status, 400, "{path}");
            assert_eq!(reply.json()["error"], "invalid_key", "{path}");
            assert!(reply.json()["message"].is_string());
        }
    }

    #[tokio::test]
    async fn restoring_is_503_with_progress_and_retry_after() {
        let server = start().await;
        let reply = get(server.addr, "/v1/state/restoring-1").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(
            reply.json(),
            json!({"error": "restoring", "partition": 2, "restored": 40, "total": 100})
        );
    }

    #[tokio::test]
    async fn elsewhere_is_a_307_to_the_owner() {
        let server = start().await;
        let reply = get(server.addr, "/v1/state/remote%2F%C3%BC%20x").await;
        assert_eq!(reply.status, 307);
        let location = "http://10.0.0.2:8080/v1/state/remote%2F%C3%BC%20x";
        assert_eq!(reply.header("location"), Some(location));
        let body = reply.json();
        assert_eq!(body["owner"]["instanceId"], "node-b");
        assert_eq!(body["partition"], 1);
        assert_eq!(body["location"], location);
    }

    #[tokio::test]
    async fn unavailable_is_503_and_failure_is_500() {
        let server = start().await;
        let reply = get(server.addr, "/v1/state/orphan").await;
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.json(),
            json!({"error": "unavailable", "partition": 4})
        );
        let reply = get(server.addr, "/v1/state/broken").await;
        assert_eq!(reply.status, 500);
        assert_eq!(
            reply.json(),
            json!({"error": "failed", "message": "disk on fire"})
        );
    }

    #[tokio::test]
    async fn status_metrics_and_health() {
        let server = start().await;
        let status = get(server.addr, "/v1/status").await;
        assert_eq!(status.status, 200);
        assert_eq!(status.json()["instanceId"], "node-a");
        assert_eq!(status.json()["partitions"][0]["restoreTotal"], 0);

        let metrics = get(server.addr, "/metrics").await;
        assert_eq!(metrics.status, 200);
        assert!(metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        assert!(metrics.body.contains("hello_streams_active_tasks 1"));

        let health = get(server.addr, "/healthz").await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok"));
        assert_eq!(get(server.addr, "/readyz").await.status, 200);
        server.query.ready.store(false, Ordering::Relaxed);
        assert_eq!(get(server.addr, "/readyz").await.status, 503);
        assert_eq!(get(server.addr, "/nowhere").await.status, 404);
    }

    #[tokio::test]
    async fn garbage_does_not_stop_the_server() {
        let server = start().await;
        // A client that sends half a request line and then stalls must not block others.
        let mut stalled = TcpStream::connect(server.addr).await.unwrap();
        stalled.write_all(b"GET /v1/sta").await.unwrap();

        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let garbage: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let answer = raw(server.addr, &garbage).await;
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"));

        // A truncated request line, then the client closes its side.
        let mut truncated = TcpStream::connect(server.addr).await.unwrap();
        truncated.write_all(b"GET /v1/state/al").await.unwrap();
        truncated.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), truncated.read_to_end(&mut rest)).await;

        let reply = get(server.addr, "/v1/state/alice").await;
        assert_eq!(reply.status, 200);
        drop(stalled);
    }

    /// Fires shutdown after a served request and asserts that `serve` returns within `bound`.
    async fn stops_within(server: Server, bound: Duration) {
        assert_eq!(get(server.addr, "/healthz").await.status, 200);
        server.trigger.fire();
        let result = tokio::time::timeout(bound, server.task)
            .await
            .expect("server stopped in time");
        assert!(result.unwrap().is_ok());
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        stops_within(start().await, Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn reads_wait_for_a_position_bounded() {
        let limits = Limits {
            max_wait: Duration::from_millis(500),
            ..Limits::default()
        };
        let server = start_with(limits, HttpAuth::default()).await;
        let reply = get(server.addr, "/v1/state/alice?after=11").await;
        assert_eq!(reply.status, 200);
        let started = std::time::Instant::now();
        let reply = get(server.addr, "/v1/state/alice?after=12&wait_ms=200").await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.json(),
            json!({"error": "not_yet", "after": 12, "position": {"partition": 0, "offset": 11}})
        );
        // No position known (the fake gives bob none): never a silent answer.
        assert_eq!(get(server.addr, "/v1/state/bob?after=0").await.status, 503);
        assert_eq!(get(server.addr, "/v1/state/bob").await.status, 200);
        assert_eq!(
            get(server.addr, "/v1/state/alice?after=x").await.status,
            400
        );
        // wait_ms is capped by max_wait.
        let started = std::time::Instant::now();
        let reply = get(server.addr, "/v1/state/alice?after=99&wait_ms=999999").await;
        assert_eq!(reply.status, 503);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_half_sent_request_is_closed_after_the_header_timeout() {
        let limits = Limits {
            http_header_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = start_with(limits, HttpAuth::default()).await;
        let mut stalled = TcpStream::connect(server.addr).await.unwrap();
        stalled
            .write_all(b"GET /v1/state/alice HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "closed by the header timeout");
        // An idle keep-alive connection too.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "idle connection closed");
        assert!(String::from_utf8_lossy(&rest).contains("200 OK"));
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503() {
        let limits = Limits {
            http_max_connections: 2,
            ..Limits::default()
        };
        let server = start_with(limits, HttpAuth::default()).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0; 12];
            stream.read_exact(&mut buf).await.unwrap();
            held.push(stream);
        }
        let refused = raw(server.addr, b"").await;
        assert!(
            refused.starts_with(b"HTTP/1.1 503"),
            "{}",
            String::from_utf8_lossy(&refused)
        );
        drop(held);
        for attempt in 0.. {
            let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            if raw(server.addr, request).await.starts_with(b"HTTP/1.1 200") {
                break;
            }
            assert!(attempt < 100, "no slot freed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_is_bounded_whatever_clients_do() {
        let limits = Limits {
            http_header_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let server = start_with(limits, HttpAuth::default()).await;
        let mut stalled = Vec::new();
        for _ in 0..20 {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream.write_all(b"GET /v1/sta").await.unwrap();
            stalled.push(stream);
        }
        // The served request lets the server accept them all before it is told to stop.
        stops_within(server, Duration::from_secs(3)).await;
    }

    #[tokio::test]
    async fn bearer_token_and_bodies() {
        let auth = HttpAuth {
            token: crate::query::auth::Secret::new("t0k"),
            metrics_need_token: true,
        };
        let server = start_with(Limits::default(), auth).await;
        assert_eq!(get(server.addr, "/v1/state/alice").await.status, 401);
        assert_eq!(get(server.addr, "/metrics").await.status, 401);
        assert_eq!(get(server.addr, "/healthz").await.status, 200);
        assert_eq!(get(server.addr, "/readyz").await.status, 200);
        let request = b"GET /v1/state/alice HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\
            Connection: close\r\n\r\n";
        assert!(raw(server.addr, request).await.starts_with(b"HTTP/1.1 200"));
        let request = b"GET /v1/state/alice HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\
            Content-Length: 5\r\nConnection: close\r\n\r\nhello";
        assert!(raw(server.addr, request).await.starts_with(b"HTTP/1.1 413"));
        let huge = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(20 * 1024)
        );
        let answer = raw(server.addr, huge.as_bytes()).await;
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[test]
    fn percent_coding_round_trips() {
        for key in ["alice", "a b/c?d#e%f", "ünïcødé", "~._-"] {
            assert_eq!(
                percent_decode(&percent_encode(key)).unwrap(),
                key.as_bytes()
            );
        }
        assert_eq!(percent_decode("%41%62c").unwrap(), b"Abc");
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%g0"), None);
    }
}
