//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `warn`).

/// Installs the global subscriber. Safe to call once per process.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
