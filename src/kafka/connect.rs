//! Waiting for the cluster at start, out loud.
//!
//! librdkafka retries an unreachable broker forever and tells only its error callback, which
//! a client hears only while something polls it; the admin client's metadata request then
//! just times out. So before anything else the daemon asks for metadata in short attempts
//! with a client it polls itself, logs every failed attempt with the address and librdkafka's
//! reason, and gives up after `kafka.start_timeout_ms`. A refused login or a failed TLS
//! handshake will not fix itself: it ends the start at once, naming the fields to check.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use crate::config::Config;

/// One metadata request; also the cadence of the log lines while the cluster is away.
const ATTEMPT: Duration = Duration::from_secs(2);
/// The first attempt is shorter, so a wrong address is reported about a second after start.
const FIRST_ATTEMPT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create a kafka client")]
    Create(#[source] KafkaError),
    #[error("kafka at {servers} did not answer within {timeout:?} ({attempts} attempts; last error: {last}); fix: check kafka.bootstrap_servers and that the brokers run and are reachable, or raise kafka.start_timeout_ms")]
    Unreachable {
        servers: String,
        timeout: Duration,
        attempts: u32,
        last: String,
    },
    #[error("kafka at {servers} refused the login ({detail}); fix: check kafka.security.sasl_username, its password (sasl_password, sasl_password_file or sasl_password_env) and kafka.security.sasl_mechanism")]
    Authentication { servers: String, detail: String },
    #[error("TLS with kafka at {servers} failed ({detail}); fix: check kafka.security.security_protocol, kafka.security.ssl_ca_location and kafka.security.ssl_verify_hostname (and ssl_certificate_location / ssl_key_location, if the brokers want a client certificate)")]
    Tls { servers: String, detail: String },
}

/// What an attempt is waiting for, shared with whoever reports start-up progress (the
/// start-up HTTP answers).
#[derive(Debug, Default)]
pub struct Progress {
    inner: Mutex<(u32, String)>,
}

impl Progress {
    /// The failed attempts so far and the last error.
    pub fn get(&self) -> (u32, String) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, attempts: u32, error: String) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = (attempts, error);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Authentication,
    Tls,
    Other,
}

fn classify(code: Option<RDKafkaErrorCode>, text: &str) -> Failure {
    match code {
        Some(RDKafkaErrorCode::Authentication) => Failure::Authentication,
        Some(RDKafkaErrorCode::SSL) => Failure::Tls,
        _ if text.contains("SASL authentication error") => Failure::Authentication,
        _ if text.contains("SSL handshake failed") => Failure::Tls,
        _ => Failure::Other,
    }
}

/// Collects what went wrong between attempts: librdkafka's warning and error lines (a refused
/// connection is logged at once, its error event only comes seconds later) and error events.
#[derive(Default)]
struct ProbeContext {
    failures: Mutex<Vec<(Failure, String)>>,
}

impl ProbeContext {
    fn note(&self, failure: Failure, text: &str) {
        // "(after 0ms in state CONNECT, 3 identical error(s) suppressed)" is the same failure.
        let text = match text.find(", ") {
            Some(i) if text[i..].contains("identical error(s) suppressed") => {
                format!("{})", &text[..i])
            }
            _ => text.to_owned(),
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !failures.iter().any(|(_, seen)| *seen == text) {
            failures.push((failure, text));
        }
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // The attempt's own line reports these once, with its number.
        if (level as i32) <= RDKafkaLogLevel::Warning as i32 {
            let (_, text) = super::logs::split_thread(message);
            self.note(classify(None, text), text);
            super::logs::log(RDKafkaLogLevel::Debug, facility, message);
        } else {
            super::logs::log(level, facility, message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        // "1/1 brokers are down" adds nothing to the broker's own reason.
        if code != Some(RDKafkaErrorCode::AllBrokersDown) {
            let (_, text) = super::logs::split_thread(reason);
            self.note(classify(code, text), text);
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// Waits until the cluster answers a metadata request, at most `kafka.start_timeout_ms`.
pub fn wait_for_cluster(config: &Config, progress: &Progress) -> Result<(), ConnectError> {
    let servers = config.kafka.bootstrap_servers.clone();
    let timeout = config.kafka.start_timeout;
    let probe: BaseConsumer<ProbeContext> = super::reader_config(config)
        .create_with_context(ProbeContext::default())
        .map_err(ConnectError::Create)?;
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        let attempt_started = Instant::now();
        let left = timeout.saturating_sub(started.elapsed());
        let slice = if attempts == 0 {
            FIRST_ATTEMPT
        } else {
            ATTEMPT
        };
        let answered = probe.fetch_metadata(Some(&config.topics.input), slice.min(left));
        // Error events wait on the client's queue until it is polled; each poll hands over
        // at most one.
        for _ in 0..1000 {
            if probe.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        let failures = std::mem::take(
            &mut *probe
                .context()
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let error = match answered {
            Ok(_) => {
                if attempts > 0 {
                    tracing::info!(
                        bootstrap_servers = %servers,
                        attempts = attempts + 1,
                        waited = ?started.elapsed(),
                        "kafka answered"
                    );
                }
                return Ok(());
            }
            Err(error) => error,
        };
        attempts += 1;
        for (failure, detail) in &failures {
            let detail = detail.clone();
            match failure {
                Failure::Authentication => {
                    return Err(ConnectError::Authentication { servers, detail })
                }
                Failure::Tls => return Err(ConnectError::Tls { servers, detail }),
                Failure::Other => {}
            }
        }
        let reasons: Vec<&str> = failures.iter().map(|(_, text)| text.as_str()).collect();
        let last = if reasons.is_empty() {
            error.to_string()
        } else {
            reasons.join("; ")
        };
        progress.set(attempts, last.clone());
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(ConnectError::Unreachable {
                servers,
                timeout,
                attempts,
                last,
            });
        }
        if reasons.is_empty() {
            // Nothing failed yet: a TLS handshake and login on a busy machine can take longer
            // than an attempt. A dropped SYN says nothing either until the connection setup
            // times out, so this still shows at the default level.
            tracing::info!(
                bootstrap_servers = %servers,
                attempt = attempts,
                waited_s = waited.as_secs(),
                gives_up_after_s = timeout.as_secs(),
                "kafka has not answered yet"
            );
        } else {
            tracing::warn!(
                bootstrap_servers = %servers,
                attempt = attempts,
                error = %last,
                waited_s = waited.as_secs(),
                gives_up_after_s = timeout.as_secs(),
                "waiting for kafka"
            );
        }
        // A refused connection can fail an attempt early; keep the cadence anyway.
        let pause = ATTEMPT.saturating_sub(attempt_started.elapsed());
        std::thread::sleep(pause.min(timeout.saturating_sub(started.elapsed())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_noted_once_and_logins_are_told_apart() {
        let context = ProbeContext::default();
        context.note(Failure::Other, "b/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)");
        context.note(Failure::Other, "b/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT, 1 identical error(s) suppressed)");
        assert_eq!(context.failures.lock().unwrap().len(), 1);
        assert_eq!(
            classify(None, "127.0.0.1:26093/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN"),
            Failure::Authentication
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::SSL), "anything"),
            Failure::Tls
        );
        assert_eq!(classify(None, "1/1 brokers are down"), Failure::Other);
    }
}
