//! Asks the owner of a key for its state over HTTP, so a client behind a load balancer gets an
//! answer from any instance. One hop: the request is marked as forwarded, and an instance
//! never forwards a forwarded request again (it redirects or says "unavailable").

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::auth::Secret;
use super::settings::Forwarding;
use super::tls::Tls;

/// Marks a forwarded request; its value is the instance that forwarded it.
pub const FORWARDED_HEADER: &str = "x-hello-streams-forwarded-by";
/// A state answer is small; anything bigger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("owner address {0} does not make a valid url")]
    Url(String),
    #[error("owner did not answer within {0:?}")]
    Timeout(Duration),
    #[error("owner request failed: {0}")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("owner answer unreadable: {0}")]
    Body(String),
}

/// The owner's answer, passed on as it came.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

pub struct HttpForwarder {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// `https` when the group speaks TLS: the owner's certificate is checked against the
    /// configured CA and must name the host it announced.
    scheme: &'static str,
    token: Secret,
    timeout: Duration,
    me: HeaderValue,
}

impl HttpForwarder {
    pub fn new(settings: &Forwarding, token: Secret, instance_id: &str, tls: Option<&Tls>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        // Without TLS no certificate is ever checked (plain `http` URLs pass straight
        // through), so an empty trust store is enough.
        let client_config = match tls {
            Some(tls) => tls.client_config(),
            None => rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| {
                builder
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
            .expect("ring supports the default protocol versions"),
        };
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(client_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(settings.pool_size)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HttpForwarder {
            client,
            scheme: if tls.is_some() { "https" } else { "http" },
            token,
            timeout: settings.timeout,
            me: HeaderValue::try_from(instance_id).unwrap_or(HeaderValue::from_static("instance")),
        }
    }

    /// `GET {scheme}://{owner}{path_and_query}`, bounded by the forwarding timeout plus `wait`
    /// (the time the owner may wait for a position the read asked for).
    pub async fn get(
        &self,
        owner: &str,
        path_and_query: &str,
        wait: Duration,
    ) -> Result<Answer, ForwardError> {
        let url = format!("{}://{owner}{path_and_query}", self.scheme);
        let mut request = Request::get(url.as_str())
            .header(FORWARDED_HEADER, self.me.clone())
            .body(Empty::new())
            .map_err(|_| ForwardError::Url(owner.to_owned()))?;
        if self.token.is_set() {
            let bearer = format!("Bearer {}", self.token.expose());
            let mut value =
                HeaderValue::try_from(bearer).map_err(|_| ForwardError::Url(owner.to_owned()))?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(ForwardError::Request)?;
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| ForwardError::Body(e.to_string()))?
                .to_bytes();
            Ok(Answer {
                status,
                content_type,
                body,
            })
        };
        let bound = self.timeout + wait;
        tokio::time::timeout(bound, exchange)
            .await
            .map_err(|_| ForwardError::Timeout(bound))?
    }
}
