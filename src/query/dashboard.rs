//! The live dashboard at `GET /` of the HTTP port: one self-contained page (no CDN, assets
//! compiled into the binary) that polls the JSON API.
//!
//! The page holds no data, so it is served without the bearer token (see
//! [`super::auth::HttpAuth::allows`]); it reads the token from its URL fragment and sends it
//! on its API calls.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("dashboard/index.html");

/// The browser enforces what the page promises: nothing loaded from elsewhere, API calls to
/// this origin only, and no framing (the page may carry a token in its URL).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for external in [
            "src=",
            "href=\"http",
            "href=\"//",
            "url(",
            "@import",
            "@font-face",
        ] {
            assert!(!PAGE.contains(external), "the page uses {external}");
        }
        assert!(PAGE.contains("name=\"viewport\""));
    }
}
