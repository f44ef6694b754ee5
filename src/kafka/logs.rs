//! librdkafka's log lines and error events, as tracing events with structured fields.
//!
//! librdkafka reports at WARNING what it retries by itself and what always resolves within
//! seconds of a normal start: the transaction coordinator still loading, or moving, when the
//! producer asks for its id. An operator who sees WARN on every start learns to ignore WARN,
//! so those go to DEBUG; anything else keeps librdkafka's level.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

/// Context for clients that need nothing beyond logging (the admin client, the announcer).
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_error(&error, reason);
    }
}

impl ProducerContext for LogContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Conditions the Kafka protocol marks retriable and librdkafka retries on its own; they are
/// normal while a broker starts or a coordinator moves.
const TRANSIENT: &[&str] = &[
    "Coordinator load in progress",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "Coordinator not available",
    "COORDINATOR_NOT_AVAILABLE",
    "Not coordinator",
    "NOT_COORDINATOR",
    "Concurrent transactions",
    "CONCURRENT_TRANSACTIONS",
];

pub fn is_transient(message: &str) -> bool {
    TRANSIENT.iter().any(|t| message.contains(t))
}

/// librdkafka prefixes its lines with the internal thread, `[thrd:127.0.0.1:9092/1]: `, which
/// names the broker connection the line is about: a field, not text.
pub fn split_thread(message: &str) -> (&str, &str) {
    if let Some(rest) = message.strip_prefix("[thrd:") {
        if let Some((thread, text)) = rest.split_once("]: ") {
            return (thread, text);
        }
    }
    ("", message)
}

/// One librdkafka log line.
pub fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    let (thread, text) = split_thread(message);
    if is_transient(text) {
        tracing::debug!(target: "librdkafka", facility, thread, transient = true, "{text}");
        return;
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, thread, "{text}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", facility, thread, "{text}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, thread, "{text}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, thread, "{text}"),
    }
}

/// An error event of a client (librdkafka's error callback).
pub fn log_error(error: &KafkaError, reason: &str) {
    let (thread, text) = split_thread(reason);
    if is_transient(text) || is_transient(&error.to_string()) {
        tracing::debug!(target: "librdkafka", %error, thread, transient = true, "{text}");
    } else {
        tracing::warn!(target: "librdkafka", %error, thread, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_pid_retry_is_transient_and_real_problems_are_not() {
        let (thread, text) = split_thread(
            "[thrd:TxnCoordinator]: TxnCoordinator/1: Failed to acquire transactional PID from broker TxnCoordinator/1: Broker: Coordinator load in progress: retrying",
        );
        assert_eq!(thread, "TxnCoordinator");
        assert!(text.starts_with("TxnCoordinator/1: Failed"));
        assert!(is_transient(text));
        for real in [
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused",
            "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN",
            "1/1 brokers are down",
        ] {
            assert!(!is_transient(real), "{real}");
        }
        assert_eq!(split_thread("no prefix"), ("", "no prefix"));
    }
}
