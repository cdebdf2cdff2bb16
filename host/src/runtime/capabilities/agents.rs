//! `corral:agent/agents`: calling other agents of the same tenant.
//!
//! The runtime checks the grant (which agents this one may call, how many calls) and
//! counts; an [`AgentCaller`] runs the callee — the control plane as a full execution
//! with its own record, `corral run` from local component files. Each caller refuses a
//! call that would go deeper than the host allows or back to an agent already in the
//! chain ([`CallChain`]). The callee's time counts against the caller's deadline: it
//! gets at most what the caller has left.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Providers;
use crate::policy::{AgentsGrant, Grants};
use crate::runtime::bindings::corral::agent::agents::{self, CallError};
use crate::runtime::bindings::corral::agent::types::AgentError;
use crate::runtime::outcome::{Denial, DenialReason};
use crate::runtime::state::HostState;

/// Most denials listed per invocation (all are counted).
const MAX_LISTED_DENIALS: usize = 64;

/// One call to another agent, as the caller asks it.
#[derive(Debug, Clone)]
pub struct ChildCall {
    /// The callee's name.
    pub agent: String,
    /// The action.
    pub action: String,
    /// The input, as JSON text.
    pub input: String,
    /// When the calling invocation's own time runs out.
    pub deadline: Instant,
}

/// What a call that ran returned, with what its execution and every execution below
/// it used.
#[derive(Debug, Clone)]
pub struct ChildResult {
    /// The callee's output, or why it did not succeed.
    pub result: Result<String, CallError>,
    /// The callee's subtree: executions, fuel and cost.
    pub rollup: Rollup,
}

/// Executions, fuel and cost of a subtree of calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rollup {
    /// Executions that ran.
    pub executions: u64,
    /// Their fuel.
    pub fuel: u64,
    /// Their cost, in picodollars (0 where no prices apply, as under `corral run`).
    pub cost_picodollars: i64,
}

impl Rollup {
    /// Adds `other` in.
    pub fn add(&mut self, other: Rollup) {
        self.executions += other.executions;
        self.fuel = self.fuel.saturating_add(other.fuel);
        self.cost_picodollars = self.cost_picodollars.saturating_add(other.cost_picodollars);
    }
}

/// Runs calls to other agents.
pub trait AgentCaller: Send + Sync {
    /// Runs `call`. `Err` means the callee did not run (not found, paused, refused by
    /// a quota, too deep, a cycle); a callee that ran and failed is `Ok` with
    /// `result: Err(CallError::Failed(…))`.
    fn call(&self, call: ChildCall) -> BoxFuture<'_, ChildResult>;

    /// Submits `call` as a task (its deadline is ignored: a task runs on its own) and
    /// returns the task's id. Hosts without tasks refuse it.
    fn submit_task(&self, call: ChildCall) -> BoxFuture<'_, Result<String, CallError>> {
        let _ = call;
        Box::pin(async {
            Err(refused(
                "tasks_unavailable",
                "this host runs no tasks",
                false,
            ))
        })
    }

    /// Waits until `until` for task `id` — one of an agent `grant` allows — to end:
    /// `None` if it has not; its output if it succeeded; `Failed` if not. An id that is
    /// not such a task is `Denied`.
    fn wait_task(
        &self,
        id: String,
        grant: AgentsGrant,
        until: Instant,
    ) -> BoxFuture<'_, Result<Option<String>, CallError>> {
        let _ = (id, grant, until);
        Box::pin(async {
            Err(refused(
                "tasks_unavailable",
                "this host runs no tasks",
                false,
            ))
        })
    }
}

/// The agents a call passed through, from the root: what depth and cycle checks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallChain {
    /// Agent names, root first; the last is the one calling.
    pub agents: Vec<String>,
    /// The root execution's id.
    pub root_execution_id: String,
    /// The id of the execution at the end of the chain (the one calling).
    pub execution_id: String,
}

impl CallChain {
    /// The chain of a root invocation of `agent` (execution `id`).
    pub fn root(agent: &str, id: &str) -> CallChain {
        CallChain {
            agents: vec![agent.to_string()],
            root_execution_id: id.to_string(),
            execution_id: id.to_string(),
        }
    }

    /// How deep a call from here goes (a root's children are at depth 1).
    pub fn child_depth(&self) -> usize {
        self.agents.len()
    }

    /// Refuses a call to `callee` that would pass `max_depth` or loop back.
    pub fn check(&self, callee: &str, max_depth: usize) -> Result<(), CallError> {
        if self.agents.iter().any(|a| a == callee) {
            return Err(CallError::Cycle(format!(
                "{callee} is already in this chain of calls ({})",
                self.agents.join(" → ")
            )));
        }
        if self.child_depth() > max_depth {
            return Err(CallError::DepthExceeded(format!(
                "calls may go {max_depth} deep; this chain is {}",
                self.agents.join(" → ")
            )));
        }
        Ok(())
    }

    /// The chain of the callee `agent`, running as execution `id`.
    pub fn child(&self, agent: &str, id: &str) -> CallChain {
        let mut agents = self.agents.clone();
        agents.push(agent.to_string());
        CallChain {
            agents,
            root_execution_id: self.root_execution_id.clone(),
            execution_id: id.to_string(),
        }
    }
}

/// What one invocation's calls to other agents used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentsUsage {
    /// Calls made (that passed the grant).
    pub calls: u64,
    /// Calls refused by the grant, or not run (depth, cycle, quotas, paused).
    pub calls_denied: u64,
    /// Calls whose callee ran and did not succeed.
    pub calls_failed: u64,
    /// Tasks submitted to other agents (each also counted in `calls`).
    #[serde(default)]
    pub tasks_submitted: u64,
    /// Everything the calls ran, all the way down.
    pub subtree: Rollup,
}

/// Per-invocation agent-call state.
pub struct AgentsState {
    grant: Option<AgentsGrant>,
    caller: Option<std::sync::Arc<dyn AgentCaller>>,
    deadline: Instant,
    usage: AgentsUsage,
    denials: Vec<Denial>,
}

impl AgentsState {
    /// State for one invocation.
    pub fn new(grants: &Grants, providers: &Providers) -> AgentsState {
        AgentsState {
            grant: grants.agents.clone(),
            caller: providers.agents.clone(),
            // Set by `start` once the timeout is known.
            deadline: Instant::now() + Duration::from_secs(3600),
            usage: AgentsUsage::default(),
            denials: Vec::new(),
        }
    }

    /// Starts the clock: calls must finish by `deadline`.
    pub fn start(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// What the calls used.
    pub fn usage(&self) -> AgentsUsage {
        self.usage
    }

    /// The calls refused, in order (up to a bound).
    pub fn denials(&self) -> &[Denial] {
        &self.denials
    }

    fn deny(&mut self, target: &str, reason: DenialReason, error: CallError) -> CallError {
        self.usage.calls_denied += 1;
        if self.denials.len() < MAX_LISTED_DENIALS {
            let detail = match &error {
                CallError::Denied(m) | CallError::DepthExceeded(m) | CallError::Cycle(m) => {
                    m.clone()
                }
                CallError::Refused(e) | CallError::Failed(e) => e.message.clone(),
            };
            self.denials.push(Denial {
                capability: "agents".into(),
                target: target.into(),
                reason,
                detail,
            });
        }
        error
    }

    /// Checks that the grant lets this invocation make one more call to `agent`, and
    /// returns the caller that runs it.
    fn admit_call(&mut self, agent: &str) -> Result<std::sync::Arc<dyn AgentCaller>, CallError> {
        let Some(grant) = &self.grant else {
            let message =
                format!("calling other agents is not granted to this agent (asked for {agent:?})");
            return Err(self.deny(agent, DenialReason::NotGranted, CallError::Denied(message)));
        };
        if !grant.allows(agent) {
            let message = format!("calling agent {agent:?} is not granted to this agent");
            return Err(self.deny(agent, DenialReason::NotAllowed, CallError::Denied(message)));
        }
        if self.usage.calls >= grant.max_calls {
            let message = format!(
                "this invocation may make {} calls to other agents",
                grant.max_calls
            );
            return Err(self.deny(
                agent,
                DenialReason::RequestLimit,
                CallError::Denied(message),
            ));
        }
        let Some(caller) = self.caller.clone() else {
            let message = "this host cannot call other agents here".to_string();
            return Err(self.deny(agent, DenialReason::NotGranted, CallError::Denied(message)));
        };
        Ok(caller)
    }

    /// The reason to list for a call the caller refused.
    fn refusal_reason(error: &CallError) -> DenialReason {
        match error {
            CallError::DepthExceeded(_) => DenialReason::CallDepth,
            CallError::Cycle(_) => DenialReason::CallCycle,
            CallError::Refused(_) => DenialReason::Refused,
            _ => DenialReason::NotAllowed,
        }
    }

    /// Checks the grant, then has the caller run the call.
    async fn call(
        &mut self,
        agent: String,
        action: String,
        input: String,
    ) -> Result<String, CallError> {
        let caller = self.admit_call(&agent)?;
        self.usage.calls += 1;
        let done = caller
            .call(ChildCall {
                agent: agent.clone(),
                action,
                input,
                deadline: self.deadline,
            })
            .await;
        self.usage.subtree.add(done.rollup);
        match done.result {
            Ok(output) => Ok(output),
            Err(error @ CallError::Failed(_)) => {
                self.usage.calls_failed += 1;
                Err(error)
            }
            Err(error) => {
                self.usage.calls -= 1;
                let reason = Self::refusal_reason(&error);
                Err(self.deny(&agent, reason, error))
            }
        }
    }

    /// Checks the grant, then has the caller submit the task.
    async fn submit_task(
        &mut self,
        agent: String,
        action: String,
        input: String,
    ) -> Result<String, CallError> {
        let caller = self.admit_call(&agent)?;
        let submitted = caller
            .submit_task(ChildCall {
                agent: agent.clone(),
                action,
                input,
                deadline: self.deadline,
            })
            .await;
        match submitted {
            Ok(id) => {
                self.usage.calls += 1;
                self.usage.tasks_submitted += 1;
                Ok(id)
            }
            Err(error) => {
                let reason = Self::refusal_reason(&error);
                Err(self.deny(&agent, reason, error))
            }
        }
    }

    /// Waits (within this invocation's deadline) for a task of a granted agent.
    async fn wait_task(
        &mut self,
        id: String,
        timeout_ms: u32,
    ) -> Result<Option<String>, CallError> {
        let (Some(grant), Some(caller)) = (self.grant.clone(), self.caller.clone()) else {
            let message = "calling other agents is not granted to this agent".to_string();
            return Err(self.deny(&id, DenialReason::NotGranted, CallError::Denied(message)));
        };
        let until =
            (Instant::now() + Duration::from_millis(u64::from(timeout_ms))).min(self.deadline);
        caller.wait_task(id, grant, until).await
    }
}

impl agents::Host for HostState {
    async fn call(
        &mut self,
        agent: String,
        action: String,
        input: String,
    ) -> wasmtime::Result<Result<String, CallError>> {
        Ok(self.caps.agents.call(agent, action, input).await)
    }

    async fn submit_task(
        &mut self,
        agent: String,
        action: String,
        input: String,
    ) -> wasmtime::Result<Result<String, CallError>> {
        Ok(self.caps.agents.submit_task(agent, action, input).await)
    }

    async fn wait_task(
        &mut self,
        id: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Option<String>, CallError>> {
        Ok(self.caps.agents.wait_task(id, timeout_ms).await)
    }
}

/// An error for a callee that did not run, with a code the caller can branch on.
pub fn refused(code: &str, message: impl Into<String>, retryable: bool) -> CallError {
    CallError::Refused(AgentError {
        code: code.into(),
        message: message.into(),
        retryable,
    })
}

/// An error for a callee that ran and did not succeed.
pub fn failed(outcome: &str, message: impl Into<String>, retryable: bool) -> CallError {
    CallError::Failed(AgentError {
        code: outcome.into(),
        message: message.into(),
        retryable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_refuses_cycles_and_depth() {
        let root = CallChain::root("a", "e1");
        assert!(root.check("b", 2).is_ok());
        let b = root.child("b", "e2");
        assert_eq!(
            (b.root_execution_id.as_str(), b.execution_id.as_str()),
            ("e1", "e2")
        );
        assert!(matches!(b.check("a", 5), Err(CallError::Cycle(m)) if m.contains("a → b")));
        let c = b.child("c", "e3");
        assert!(c.check("d", 3).is_ok());
        assert!(matches!(c.check("d", 2), Err(CallError::DepthExceeded(_))));
    }
}
