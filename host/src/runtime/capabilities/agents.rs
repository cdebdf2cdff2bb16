//! `corral:agent/agents`: calling other agents of the same tenant.
//!
//! Skeleton: every call is refused until the caller is implemented.

use serde::{Deserialize, Serialize};

use super::Providers;
use crate::policy::Grants;
use crate::runtime::bindings::corral::agent::agents::{self, CallError};
use crate::runtime::state::HostState;

/// Runs calls to other agents.
pub trait AgentCaller: Send + Sync {}

/// What one invocation's calls to other agents used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentsUsage {}

/// Per-invocation agent-call state.
pub struct AgentsState {}

impl AgentsState {
    /// State for one invocation.
    pub fn new(_grants: &Grants, _providers: &Providers) -> AgentsState {
        AgentsState {}
    }

    /// What the calls used.
    pub fn usage(&self) -> AgentsUsage {
        AgentsUsage {}
    }
}

impl agents::Host for HostState {
    async fn call(
        &mut self,
        agent: String,
        _action: String,
        _input: String,
    ) -> wasmtime::Result<Result<String, CallError>> {
        Ok(Err(CallError::Denied(format!(
            "calling agent {agent:?} is not granted to this agent"
        ))))
    }
}
