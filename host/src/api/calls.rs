//! Calls between agents under `corral serve`: each call is a full execution of the
//! callee — an agent of the same tenant — with its own record, linked to its parent
//! and root, its own quotas and limits, and at most the time its caller has left.

use std::time::Instant;

use axum::http::StatusCode;
use futures::future::BoxFuture;

use super::AppState;
use super::extract::Principal;
use super::routes::agents::find;
use super::routes::invoke::{Ran, Run, execute};
use crate::db::tenants::Tenant;
use crate::runtime::Outcome;
use crate::runtime::bindings::corral::agent::agents::CallError;
use crate::runtime::capabilities::agents::{
    AgentCaller, CallChain, ChildCall, ChildResult, Rollup, failed, refused,
};

/// Runs the calls one execution makes to other agents.
pub struct ApiCaller {
    /// The server.
    pub state: AppState,
    /// Whoever invoked the root: the calls act on their behalf.
    pub principal: Principal,
    /// The tenant; callees are its agents.
    pub tenant: Tenant,
    /// The chain that led to the calling execution.
    pub chain: CallChain,
    /// Passed on to every callee.
    pub correlation_id: Option<String>,
}

impl AgentCaller for ApiCaller {
    fn call(&self, call: ChildCall) -> BoxFuture<'_, ChildResult> {
        Box::pin(async move {
            match self.run(call).await {
                Ok(ran) => ChildResult {
                    result: match (ran.outcome, ran.output) {
                        (Outcome::Succeeded, Some(output)) => Ok(output),
                        (outcome, _) => {
                            let error =
                                ran.error.unwrap_or_else(|| crate::runtime::ExecutionError {
                                    code: outcome.as_str().into(),
                                    message: format!("the agent ended with {}", outcome.as_str()),
                                    retryable: false,
                                });
                            Err(failed(
                                outcome.as_str(),
                                format!("{}: {}", error.code, error.message),
                                error.retryable,
                            ))
                        }
                    },
                    rollup: ran.rollup,
                },
                Err(error) => ChildResult {
                    result: Err(error),
                    rollup: Rollup::default(),
                },
            }
        })
    }
}

impl ApiCaller {
    async fn run(&self, call: ChildCall) -> Result<Ran, CallError> {
        let state = &self.state;
        let queued_at = state.quotas.clock().now();
        self.chain
            .check(&call.agent, state.settings.max_call_depth)?;
        let agent = find(state, &self.principal, &call.agent)
            .await
            .map_err(|_| {
                CallError::Denied(format!(
                    "there is no agent {:?} this agent may call",
                    call.agent
                ))
            })?;
        if agent.status == "paused" {
            return Err(refused(
                "agent_paused",
                format!("agent {:?} is paused", agent.name),
                true,
            ));
        }
        let tenant = state.tenant(&self.tenant.id).await.map_err(api_refusal)?;
        let mut limits = agent
            .policy
            .0
            .limits
            .tighten(tenant.policy.0.limits.tighten(state.settings.limits));
        // The callee's time counts against the caller's deadline.
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(refused(
                "deadline_exceeded",
                "the calling invocation has no time left",
                false,
            ));
        }
        limits.timeout = limits.timeout.min(left);
        let run = Run {
            principal: self.principal.clone(),
            agent,
            tenant,
            action: call.action,
            input: call.input,
            version: None,
            correlation_id: self.correlation_id.clone(),
            limits,
            queued_at,
            idempotency_key: None,
            chain: Some(self.chain.clone()),
        };
        // A task of its own: if the caller is stopped at its deadline, the callee still
        // ends within its own (shorter) timeout and leaves its record.
        let state = state.clone();
        match tokio::spawn(async move { execute(&state, run).await }).await {
            Ok(result) => result.map_err(api_refusal),
            Err(e) => {
                tracing::error!(error = %e, "a call between agents failed to run");
                Err(refused("internal", "the host failed to run the call", true))
            }
        }
    }
}

/// An API error that kept the callee from running, as the caller sees it.
fn api_refusal(error: super::ApiError) -> CallError {
    let retryable = matches!(
        error.status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    );
    refused(error.code, error.message, retryable)
}
