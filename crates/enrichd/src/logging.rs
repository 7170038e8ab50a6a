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

/// Installs the process's subscriber writing to `writer`; `filter` is used without `RUST_LOG`,
/// `colour` only applies to text.
pub fn install<W>(format: LogFormat, filter: &str, writer: W, colour: bool) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => tracing::subscriber::set_global_default(builder.with_ansi(colour).finish())?,
        LogFormat::Json => tracing::subscriber::set_global_default(
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).finish(),
        )?,
    }
    Ok(())
}

/// Installs the process's subscriber on standard output, in the format `LOG_FORMAT` names.
pub fn init(default_level: &str) -> anyhow::Result<()> {
    install(LogFormat::from_env(), default_level, std::io::stdout, std::io::stdout().is_terminal())
}
