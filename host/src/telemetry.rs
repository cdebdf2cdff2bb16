//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `warn`), in
//! colour only for a person at a terminal.

use std::io::IsTerminal;

/// Installs the global subscriber. Safe to call once per process.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .try_init();
}

/// Whether to colour the log. The fmt layer colours by default wherever it writes, so
/// files, pipes and log collectors got escape codes; colour only when stderr is a
/// terminal, and never when `NO_COLOR` is set to anything but the empty string (as
/// <https://no-color.org> asks).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
