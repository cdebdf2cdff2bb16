//! Calling other agents of the same tenant.
//!
//! Each call is a full execution of the callee, with its own record linked to this
//! one; its time counts against this invocation's deadline. The host refuses calls
//! unless the agent's policy grants them (`grants.agents.allow` names the callee),
//! calls that would go deeper than the host allows, and calls back to an agent
//! already in the chain.
//!
//! An agent can also fan work out as **tasks** ([`submit_task`]), which run on their
//! own — on any node, with retries — and gather their results with [`wait_task`]
//! within its own deadline, as multi-agent runtimes do.
//!
//! # Examples
//!
//! ```no_run
//! use corral_sdk::{Error, agents};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Stats { words: u64 }
//!
//! fn count_words(text: String) -> Result<u64, Error> {
//!     // `?` turns a refused or failed call into this agent's error.
//!     let stats: Stats = agents::call("text-stats", "stats", &serde_json::json!({ "text": text }))?;
//!     Ok(stats.words)
//! }
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::corral::agent::agents as host;

/// Why a call did not return the callee's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not granted, or there is no such agent (`code` `call_denied`).
    Denied(String),
    /// The call would go deeper than the host allows (`call_depth_exceeded`).
    DepthExceeded(String),
    /// The callee is already in the chain of calls (`call_cycle`).
    Cycle(String),
    /// The callee did not run: paused, no active version, a quota refused it, or no
    /// time was left. The error's code says which (`agent_paused`, `rate_limited`, …).
    Refused(Error),
    /// The callee ran and did not succeed: the code is its outcome (`agent_error`,
    /// `fuel_exhausted`, `timed_out`, …).
    Failed(Error),
    /// The input could not be encoded or the output decoded.
    Json(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Denied(m) | CallError::DepthExceeded(m) | CallError::Cycle(m) => {
                f.write_str(m)
            }
            CallError::Refused(e) | CallError::Failed(e) => {
                write!(f, "{}: {}", e.code(), e.message())
            }
            CallError::Json(m) => write!(f, "JSON: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        match e {
            CallError::Denied(m) => Error::new("call_denied", m),
            CallError::DepthExceeded(m) => Error::new("call_depth_exceeded", m),
            CallError::Cycle(m) => Error::new("call_cycle", m),
            CallError::Refused(e) | CallError::Failed(e) => e,
            CallError::Json(m) => Error::new("invalid_json", m),
        }
    }
}

fn error(e: host::AgentError) -> Error {
    let error = Error::new(e.code, e.message);
    if e.retryable {
        error.retryable()
    } else {
        error
    }
}

/// Runs `action` of `agent` with `input` as JSON text and returns its output text.
pub fn call_raw(agent: &str, action: &str, input: &str) -> Result<String, CallError> {
    host::call(agent, action, input).map_err(call_error)
}

/// Runs `action` of `agent` with `input` and decodes its output as `O`.
pub fn call<I: Serialize + ?Sized, O: DeserializeOwned>(
    agent: &str,
    action: &str,
    input: &I,
) -> Result<O, CallError> {
    let input = serde_json::to_string(input).map_err(|e| CallError::Json(e.to_string()))?;
    let output = call_raw(agent, action, &input)?;
    serde_json::from_str(&output).map_err(|e| CallError::Json(e.to_string()))
}

/// Submits `action` of `agent` with `input` as a task that runs on its own, and returns
/// the task's id at once. The same grant as [`call`] applies; each submission counts as
/// a call.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use corral_sdk::{Error, agents};
///
/// fn fan_out(texts: Vec<String>) -> Result<Vec<serde_json::Value>, Error> {
///     let ids = texts
///         .iter()
///         .map(|text| agents::submit_task("text-stats", "stats", &serde_json::json!({ "text": text })))
///         .collect::<Result<Vec<_>, _>>()?;
///     let mut results = Vec::new();
///     for id in ids {
///         match agents::wait_task(&id, Duration::from_secs(10))? {
///             Some(result) => results.push(result),
///             None => return Err(Error::new("not_done", format!("task {id} is still running")).retryable()),
///         }
///     }
///     Ok(results)
/// }
/// ```
pub fn submit_task<I: Serialize + ?Sized>(
    agent: &str,
    action: &str,
    input: &I,
) -> Result<String, CallError> {
    let input = serde_json::to_string(input).map_err(|e| CallError::Json(e.to_string()))?;
    host::submit_task(agent, action, &input).map_err(call_error)
}

/// Waits up to `timeout` (never past this invocation's deadline; zero to only look)
/// for task `id` to end: `None` if it has not yet, its output text if it succeeded,
/// [`CallError::Failed`] (with the task's error code, or `cancelled`) if not.
pub fn wait_task_raw(id: &str, timeout: std::time::Duration) -> Result<Option<String>, CallError> {
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    host::wait_task(id, ms).map_err(call_error)
}

/// [`wait_task_raw`], with the output decoded as `O`.
pub fn wait_task<O: DeserializeOwned>(
    id: &str,
    timeout: std::time::Duration,
) -> Result<Option<O>, CallError> {
    match wait_task_raw(id, timeout)? {
        None => Ok(None),
        Some(output) => serde_json::from_str(&output)
            .map(Some)
            .map_err(|e| CallError::Json(e.to_string())),
    }
}

fn call_error(e: host::CallError) -> CallError {
    match e {
        host::CallError::Denied(m) => CallError::Denied(m),
        host::CallError::DepthExceeded(m) => CallError::DepthExceeded(m),
        host::CallError::Cycle(m) => CallError::Cycle(m),
        host::CallError::Refused(e) => CallError::Refused(error(e)),
        host::CallError::Failed(e) => CallError::Failed(error(e)),
    }
}
