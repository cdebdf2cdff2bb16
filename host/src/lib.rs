//! Corral's host: a WebAssembly component runtime for sandboxed agents.
//!
//! - [`runtime`]: load agent components and run invocations under hard [`limits`].
//! - [`invocations`]: the pipeline every run goes through (HTTP, calls, tasks).
//! - [`server`]: `corral serve`, the control plane: [`api`] over [`db`].
//! - [`tasks`], [`workflows`], [`schedules`]: durable work, graphs of it, and cron.
//! - [`secrets`]: agents' secrets sealed at rest.
//! - [`cli`]: the `corral` command line.

pub mod api;
pub mod cache;
pub mod cli;
pub mod config;
pub mod console;
pub mod costs;
pub mod db;
pub mod housekeeping;
pub mod invocations;
pub mod limits;
pub mod listener;
pub mod llm;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod quota;
pub mod runtime;
pub mod schedules;
pub mod secrets;
pub mod server;
pub mod tasks;
pub mod telemetry;
pub mod workflows;
