//! Integration tests for Corral, as a crate of their own: the root is a virtual
//! workspace, which cannot hold test targets.
//!
//! The tests run the real agents in `plugins/`. `build.rs` builds them once per
//! `cargo test` (into `target/plugins`) and [`plugins`] holds the paths of the results;
//! [`harness`] holds the helpers the tests share, and [`upstream`] a real HTTP server for
//! the outbound-HTTP tests.

pub mod app;
pub mod baseline;
pub mod guests;
pub mod harness;
pub mod otlp;
pub mod process;
pub mod providers;
pub mod upstream;

/// Absolute paths of the test components that `build.rs` built from `plugins/`:
/// `ECHO`, `TEXT_STATS`, `HOSTILE`, `FETCH`, `GREETER` (agents) and `NOT_AN_AGENT` (a plain
/// `wasi:cli/command`, which the host must refuse).
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
