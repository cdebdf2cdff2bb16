//! Calls between agents under `corral serve`: each call is a full execution of the
//! callee — an agent of the same tenant — through the same pipeline, with its own
//! record, linked to its parent and root, its own quotas and limits, and at most the
//! time its caller has left.

use std::time::Instant;

use futures::future::BoxFuture;

use super::{Actor, Invocation, Invocations, InvokeError, Invoked};
use crate::db::tenants::Tenant;
use crate::runtime::Outcome;
use crate::runtime::bindings::corral::agent::agents::CallError;
use crate::runtime::capabilities::agents::{
    AgentCaller, CallChain, ChildCall, ChildResult, Rollup, failed, refused,
};

/// Runs the calls one execution makes to other agents.
pub struct PipelineCaller {
    /// The pipeline the calls go through.
    pub pipeline: Invocations,
    /// Whoever invoked the root: the calls act on their behalf.
    pub actor: Actor,
    /// The tenant; callees are its agents.
    pub tenant: Tenant,
    /// The chain that led to the calling execution.
    pub chain: CallChain,
    /// Passed on to every callee.
    pub correlation_id: Option<String>,
}

impl AgentCaller for PipelineCaller {
    fn call(&self, call: ChildCall) -> BoxFuture<'_, ChildResult> {
        Box::pin(async move {
            match self.run(call).await {
                Ok(ran) => ChildResult {
                    result: result_of(&ran),
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

/// A callee that ran, as its caller sees it: its output, or why it did not succeed.
fn result_of(ran: &Invoked) -> Result<String, CallError> {
    match (ran.outcome, &ran.output) {
        (Outcome::Succeeded, Some(output)) => Ok(output.clone()),
        (outcome, _) => {
            let error = ran
                .error
                .clone()
                .unwrap_or_else(|| crate::runtime::ExecutionError {
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
    }
}

impl PipelineCaller {
    async fn run(&self, call: ChildCall) -> Result<Invoked, CallError> {
        let pipeline = &self.pipeline;
        let queued_at = pipeline.quotas.clock().now();
        self.chain
            .check(&call.agent, pipeline.settings.max_call_depth)?;
        let agent = pipeline
            .agent(&self.tenant.id, &call.agent)
            .await
            .map_err(|_| {
                CallError::Denied(format!(
                    "there is no agent {:?} this agent may call",
                    call.agent
                ))
            })?;
        let tenant = pipeline
            .tenant(&self.tenant.id)
            .await
            .map_err(|e| call_error(e.into()))?;
        let mut limits = pipeline.limits(&tenant, &agent);
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
        let mut invocation = Invocation::new(
            self.actor.clone(),
            agent,
            tenant,
            call.action,
            call.input,
            limits,
            queued_at,
        );
        invocation.correlation_id = self.correlation_id.clone();
        invocation.chain = Some(self.chain.clone());
        // Detached: if the caller is stopped at its deadline, the callee still ends
        // within its own (shorter) timeout and leaves its record.
        pipeline.run(invocation).await.map_err(call_error)
    }
}

/// Why a callee did not run, as its caller sees it.
pub fn call_error(error: InvokeError) -> CallError {
    match error {
        InvokeError::Paused { agent } => {
            refused("agent_paused", format!("agent {agent:?} is paused"), true)
        }
        e @ InvokeError::NoActiveVersion { .. } => {
            refused("no_active_version", e.to_string(), false)
        }
        e @ InvokeError::VersionNotFound { .. } => refused("not_found", e.to_string(), false),
        InvokeError::Quota(denial) => refused(denial.code(), denial.message(), true),
        InvokeError::ShuttingDown => refused("unavailable", "the server is shutting down", true),
        InvokeError::Host(e) => {
            tracing::error!(error = %e, "a call between agents failed to run");
            refused("internal", "the host failed to run the call", true)
        }
        InvokeError::Db(e) => {
            tracing::error!(error = %e, "a call between agents failed to run");
            refused("internal", "the host failed to run the call", true)
        }
    }
}
