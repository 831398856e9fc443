//! Logging setup: tracing to stderr, text or JSON, level from `--log-level` or `RUST_LOG`.

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The log target silenced below ERROR; see [`init`].
const QUIET_TARGET: &str = "sqlx_postgres::options::parse=error";

/// Installs the global subscriber. `level` wins over `RUST_LOG`; neither means `info`.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // sqlx warns about connection parameters it does not know with their values, which can be
    // passwords (`?sslpassword=`): that target never logs below ERROR, whatever the filter says.
    let filter = match QUIET_TARGET.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let layer = fmt::layer().with_writer(std::io::stderr);
    let result = match format {
        // Colour only on a terminal: files, journald and `docker logs` get plain text.
        LogFormat::Text => registry.with(layer.with_ansi(std::io::stderr().is_terminal())).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
    // A subscriber already installed (tests, embedding) is fine.
    drop(result);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_quiet_directive_parses() {
        assert!(super::QUIET_TARGET.parse::<tracing_subscriber::filter::Directive>().is_ok());
    }
}
