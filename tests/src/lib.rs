//! Workspace-level integration tests for Corral. The tests live in `tests/`; this
//! library holds what they share.

pub mod harness;

/// Paths of the agents built from `plugins/` by this crate's build script.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
