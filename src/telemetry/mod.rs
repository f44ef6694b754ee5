//! Logs and metrics.

mod metrics;
pub mod prometheus;

pub use metrics::{Metrics, OpenConnection, ServerStats, ThreadMetrics, Uncommitted};

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Sets up tracing on stderr. `filter` was validated by the config; `RUST_LOG` wins when set.
/// Text is coloured only when stderr is a terminal (and `NO_COLOR` is unset): escapes in a log
/// file or a journal are noise. JSON puts the fields at the top level of one object a line,
/// as log shippers index them.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
