//! Host capabilities beyond the sandbox, each denied unless the invocation's
//! [`Grants`] open it: key-value state ([`kv`]), configuration and secrets
//! ([`config`]), calls to other agents ([`agents`]) and model calls ([`llm`]).
//! Outbound HTTP is in
//! `runtime::egress`.
//!
//! What serves a capability is a [`Providers`] handle given with each invocation —
//! the database under `corral serve`, memory or local files under `corral run` — so
//! the runtime stays free of the control plane. Each capability counts what the
//! invocation used into [`Usage`](super::Usage) and lists what it refused in
//! [`Execution::denials`](super::Execution).

pub mod agents;
pub mod config;
pub mod kv;
pub mod llm;

use std::sync::Arc;

use crate::policy::Grants;

/// What serves each capability for one invocation; `None` means the host has no such
/// service here (every call is refused, granted or not).
#[derive(Clone, Default)]
pub struct Providers {
    /// Key-value state.
    pub kv: Option<Arc<dyn kv::KvStore>>,
    /// Config values and secrets.
    pub config: Option<Arc<dyn config::ConfigSource>>,
    /// Other agents.
    pub agents: Option<Arc<dyn agents::AgentCaller>>,
    /// The operator's models.
    pub llm: Option<Arc<crate::llm::Catalogue>>,
    /// The model-token rate quotas that apply, if any.
    pub llm_meter: Option<Arc<dyn llm::TokenMeter>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("kv", &self.kv.is_some())
            .field("config", &self.config.is_some())
            .field("agents", &self.agents.is_some())
            .field("llm", &self.llm.is_some())
            .finish()
    }
}

/// The capabilities' per-invocation state, in [`HostState`](super::state::HostState).
pub struct CapabilityState {
    /// Key-value state.
    pub kv: kv::KvState,
    /// Config values and secrets.
    pub config: config::ConfigState,
    /// Calls to other agents.
    pub agents: agents::AgentsState,
    /// Model calls.
    pub llm: llm::LlmState,
}

impl CapabilityState {
    /// State for one invocation with `grants`, served by `providers`.
    pub fn new(grants: &Grants, providers: &Providers) -> CapabilityState {
        CapabilityState {
            kv: kv::KvState::new(grants, providers),
            config: config::ConfigState::new(grants, providers),
            agents: agents::AgentsState::new(grants, providers),
            llm: llm::LlmState::new(grants, providers),
        }
    }
}
