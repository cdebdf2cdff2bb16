//! Corral's host: a WebAssembly component runtime for sandboxed agents.
//!
//! - [`runtime`]: load agent components and run invocations under hard [`limits`].
//! - [`cli`]: the `corral` command line.

pub mod cli;
pub mod limits;
pub mod runtime;
pub mod telemetry;
