//! The window reads of the HTTP API: `GET /v1/windows/{key}?from=&to=` (one key's series,
//! routed to the key's owner like `/v1/state`) and `GET /v1/top?n=` (the top keys of the
//! partitions active here).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::http::{error, failed, invalid_key, not_here, percent_decode, Shared};
use super::{instant, Lookup};
use crate::hello::domain::validate_key;

const WINDOWS_PREFIX: &str = "/v1/windows/";
/// Without `from`: the last hour.
const DEFAULT_SPAN_MS: i64 = 3_600_000;
const MAX_TOP: usize = 1_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WindowView {
    start: i64,
    end: i64,
    start_time: String,
    hellos: u64,
    events: u64,
}

/// `from` and `to` of the query string (epoch ms or ISO-8601), defaulting to the last hour.
fn range(query: Option<&str>, now_ms: i64) -> Result<(i64, i64), String> {
    let (mut from, mut to) = (None, None);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = String::from_utf8(percent_decode(value).unwrap_or_default())
            .map_err(|_| format!("`{name}` is not UTF-8"))?;
        match name {
            "from" => from = Some(instant::parse(&value).map_err(|e| format!("from: {e}"))?),
            "to" => to = Some(instant::parse(&value).map_err(|e| format!("to: {e}"))?),
            // Other parameters (a cache-buster, say) are not ours to refuse.
            _ => {}
        }
    }
    let to = to.unwrap_or(now_ms);
    let from = from.unwrap_or(to.saturating_sub(DEFAULT_SPAN_MS));
    if from > to {
        return Err(format!("from ({from}) is after to ({to})"));
    }
    Ok((from, to))
}

pub(super) async fn get_windows(
    State(api): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let raw = uri.path().strip_prefix(WINDOWS_PREFIX).unwrap_or_default();
    let Some(bytes) = percent_decode(raw) else {
        return invalid_key("key is not validly percent-encoded");
    };
    let key = match validate_key(Some(&bytes)) {
        Ok(key) => key,
        Err(poison) => return invalid_key(&poison.message),
    };
    let Some(spec) = api.query.window_spec() else {
        return error(
            StatusCode::NOT_FOUND,
            json!({"error": "windows_off", "message": "windows are off on this instance ([windows] enabled = false)"}),
        );
    };
    let (from, to) = match range(uri.query(), now_ms()) {
        Ok(range) => range,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_query", "message": message}),
            )
        }
    };
    let position = api.query.position_of(key.as_bytes());
    match api.query.windows(key.as_bytes(), from, to) {
        Lookup::Found(series) => {
            let windows: Vec<WindowView> = series
                .iter()
                .map(|(start, counts)| WindowView {
                    start: *start,
                    end: start.saturating_add(spec.size_ms),
                    start_time: instant::format(*start),
                    hellos: counts.hellos,
                    events: counts.events,
                })
                .collect();
            Json(json!({
                "key": key,
                "windowSizeMs": spec.size_ms,
                "from": from,
                "to": to,
                "windows": windows,
                "position": position,
            }))
            .into_response()
        }
        Lookup::NotFound => Json(json!({
            "key": key, "windowSizeMs": spec.size_ms, "from": from, "to": to, "windows": [], "position": position,
        }))
        .into_response(),
        other => {
            not_here(&api, other, WINDOWS_PREFIX, key, &uri, &headers, api.limits.max_wait).await
        }
    }
}

pub(super) async fn get_top(State(api): State<Shared>, uri: Uri) -> Response {
    let mut n = 10;
    for pair in uri.query().unwrap_or_default().split('&') {
        if let Some(value) = pair.strip_prefix("n=") {
            match value.parse::<usize>() {
                Ok(value) if (1..=MAX_TOP).contains(&value) => n = value,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "bad_query", "message": format!("n must be 1 to {MAX_TOP}")}),
                    )
                }
            }
        }
    }
    // Reads every state of the partitions here: off the runtime's worker threads.
    let query = api.query.clone();
    match tokio::task::spawn_blocking(move || query.top(n)).await {
        Ok(top) => Json(top).into_response(),
        Err(join) => failed(&format!("top keys failed: {join}")),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_defaults_to_the_last_hour_and_takes_both_forms() {
        assert_eq!(range(None, 10_000_000), Ok((6_400_000, 10_000_000)));
        assert_eq!(
            range(Some("from=1970-01-01T00:01:00Z&to=120000"), 0),
            Ok((60_000, 120_000))
        );
        assert_eq!(
            range(
                Some("from=2025-12-01T21%3A15%3A00%2B01%3A00"),
                1_764_620_200_000
            ),
            Ok((1_764_620_100_000, 1_764_620_200_000))
        );
        assert!(range(Some("from=5&to=4"), 0).is_err());
        assert!(range(Some("from=soon"), 0).is_err());
    }
}
