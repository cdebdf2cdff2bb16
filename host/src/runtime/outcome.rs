//! What an invocation produced: its [`Outcome`], [`Usage`] and output or error.
//!
//! Guest failures are data, not Rust errors: a trapped, starved or runaway guest
//! still yields an [`Execution`] that says exactly what stopped it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::capabilities::agents::AgentsUsage;
use super::capabilities::config::ConfigUsage;
use super::capabilities::kv::KvUsage;
use super::logs::LogEntry;

/// How an invocation ended. Stable snake_case names, used by the CLI, API and database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The agent returned output.
    Succeeded,
    /// The agent returned its own error; see [`Execution::error`].
    AgentError,
    /// The guest trapped; [`ExecutionError::code`] is the trap kind, e.g. `unreachable`.
    Trapped,
    /// The guest used up its fuel.
    FuelExhausted,
    /// The guest asked for more linear memory than its limit and then failed.
    MemoryLimitExceeded,
    /// The guest ran past its wall-clock timeout (computing or blocked in a host call).
    TimedOut,
    /// The guest returned more output than its limit allows.
    OutputTooLarge,
    /// The guest logged (or printed) more than its log limit allows.
    LogLimitExceeded,
    /// The input was rejected: not JSON, or refused by the agent as `invalid_input`.
    InvalidInput,
    /// The run was cancelled from outside (a task cancelled while it ran) and stopped.
    Cancelled,
    /// The host failed to run the guest (no instance slot could be had): not the
    /// guest's doing, not billed, and worth retrying.
    HostFailure,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 11] = [
        Outcome::Succeeded,
        Outcome::AgentError,
        Outcome::Trapped,
        Outcome::FuelExhausted,
        Outcome::MemoryLimitExceeded,
        Outcome::TimedOut,
        Outcome::OutputTooLarge,
        Outcome::LogLimitExceeded,
        Outcome::InvalidInput,
        Outcome::Cancelled,
        Outcome::HostFailure,
    ];

    /// The stable name, e.g. `fuel_exhausted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::AgentError => "agent_error",
            Outcome::Trapped => "trapped",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::MemoryLimitExceeded => "memory_limit_exceeded",
            Outcome::TimedOut => "timed_out",
            Outcome::OutputTooLarge => "output_too_large",
            Outcome::LogLimitExceeded => "log_limit_exceeded",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Cancelled => "cancelled",
            Outcome::HostFailure => "host_failure",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resources one invocation consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Fuel units consumed (about one per wasm instruction).
    pub fuel: u64,
    /// The most linear memory held at once, summed over all memories, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall time from the start of instantiation to the end of the call.
    #[serde(with = "micros", rename = "wall_time_us")]
    #[schema(value_type = u64)]
    pub wall_time: Duration,
    /// Bytes of log messages captured.
    pub log_bytes: u64,
    /// Bytes of output returned by the guest (also when it was too large to keep).
    pub output_bytes: u64,
    /// Outbound HTTP.
    #[serde(default)]
    pub http: HttpUsage,
    /// Key-value state.
    #[serde(default)]
    pub kv: KvUsage,
    /// Config values and secrets.
    #[serde(default)]
    pub config: ConfigUsage,
    /// Calls to other agents.
    #[serde(default)]
    pub agents: AgentsUsage,
    /// Model calls.
    #[serde(default)]
    pub llm: super::capabilities::llm::LlmUsage,
}

/// What one invocation's outbound HTTP requests used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HttpUsage {
    /// Requests that passed every check and were sent (or tried to connect).
    pub requests: u64,
    /// Requests refused by policy; each is listed in [`Execution::denials`] (up to a bound).
    pub requests_denied: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes delivered to the guest.
    pub bytes_received: u64,
    /// Response bodies cut at the grant's `max_response_bytes`.
    pub responses_cut: u64,
}

/// Why a capability request was refused. Stable snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DenialReason {
    /// The invocation has no grant for the capability.
    NotGranted,
    /// The grant does not list the target (for HTTP: its scheme, host and port).
    NotAllowed,
    /// The host resolved to a loopback, private, link-local or other special address
    /// that no rule names literally.
    ProhibitedAddress,
    /// The invocation already made as many requests as its grant allows.
    RequestLimit,
    /// A call to another agent would go deeper than the host allows.
    CallDepth,
    /// A call to another agent would loop back to one already in the chain.
    CallCycle,
    /// The called agent did not run: paused, no active version, or a quota refused it.
    Refused,
}

impl DenialReason {
    /// The stable name, e.g. `prohibited_address`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::NotGranted => "not_granted",
            DenialReason::NotAllowed => "not_allowed",
            DenialReason::ProhibitedAddress => "prohibited_address",
            DenialReason::RequestLimit => "request_limit",
            DenialReason::CallDepth => "call_depth",
            DenialReason::CallCycle => "call_cycle",
            DenialReason::Refused => "refused",
        }
    }
}

/// One refused capability request, kept for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Denial {
    /// The capability, e.g. `http`.
    pub capability: String,
    /// What was asked for; for HTTP `scheme://host:port`, never the path or query,
    /// which may carry secrets.
    pub target: String,
    /// Why it was refused.
    pub reason: DenialReason,
    /// The explanation, for people.
    pub detail: String,
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

/// Why an invocation did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExecutionError {
    /// For `agent_error` and `invalid_input` from the agent: the agent's code. For
    /// `trapped`: the trap kind (`unreachable`, `stack_overflow`, …). Otherwise the outcome.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// Whether retrying may help (the agent's word for agent errors; `true` only
    /// for timeouts among host-detected failures).
    pub retryable: bool,
}

/// The full record of one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// The execution id given to the guest in its context.
    pub id: String,
    /// The action that was invoked.
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The JSON output, when the outcome is `succeeded`.
    pub output: Option<String>,
    /// What went wrong, for every other outcome.
    pub error: Option<ExecutionError>,
    /// What it cost.
    pub usage: Usage,
    /// What it logged, in order.
    pub logs: Vec<LogEntry>,
    /// Capability requests refused during the run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<Denial>,
    /// Model calls sent to a provider, in order, each with its tokens and cost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub llm_calls: Vec<super::capabilities::llm::LlmCall>,
}

impl Execution {
    /// Whether the outcome is `succeeded`.
    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Succeeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_name_round_trips() {
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
        }
    }
}
