//! Log output: human-readable by default (colours only on a terminal), or one JSON object per line
//! with `LOG_FORMAT=json`; `RUST_LOG` filters either way.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields (`job_id`,
    /// `batch_id`, …) at the top level, and the enclosing request's `request_id` under `span`.
    Json,
}

impl LogFormat {
    /// From `LOG_FORMAT` (`json`, or anything else for text).
    pub fn from_env() -> LogFormat {
        match std::env::var("LOG_FORMAT") {
            Ok(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// A subscriber writing to `writer`; `colour` only applies to text.
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W, colour: bool) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(colour).finish()),
        LogFormat::Json => Box::new(
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).finish(),
        ),
    }
}

/// Installs the process's subscriber on standard output; `default_level` applies without `RUST_LOG`.
pub fn init(default_level: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let colour = std::io::stdout().is_terminal();
    tracing::subscriber::set_global_default(subscriber(LogFormat::from_env(), filter, std::io::stdout, colour))?;
    Ok(())
}
