//! Calls between agents under `corral serve`: each call is a full execution of the
//! callee — an agent of the same tenant — through the same pipeline, with its own
//! record, linked to its parent and root, its own quotas and limits, and at most the
//! time its caller has left.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::{Actor, Invocation, Invocations, InvokeError, Invoked};
use crate::db::DbError;
use crate::db::tasks;
use crate::db::tenants::Tenant;
use crate::policy::AgentsGrant;
use crate::runtime::Outcome;
use crate::runtime::bindings::corral::agent::agents::CallError;
use crate::runtime::capabilities::agents::{
    AgentCaller, CallChain, ChildCall, ChildResult, Rollup, failed, refused,
};
use crate::tasks::submit::{self, SubmitError, Submitter, TaskSpec};
use crate::tasks::{TaskError, TaskState};

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

    fn submit_task(&self, call: ChildCall) -> BoxFuture<'_, Result<String, CallError>> {
        Box::pin(self.submit(call))
    }

    fn wait_task(
        &self,
        id: String,
        grant: AgentsGrant,
        until: Instant,
    ) -> BoxFuture<'_, Result<Option<String>, CallError>> {
        Box::pin(self.wait(id, grant, until))
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

impl PipelineCaller {
    /// Submits a task to another agent, linked to the calling execution.
    async fn submit(&self, call: ChildCall) -> Result<String, CallError> {
        let input = serde_json::value::RawValue::from_string(call.input).map_err(|e| {
            refused(
                "invalid_input",
                format!("the task's input is not JSON: {e}"),
                false,
            )
        })?;
        let spec = TaskSpec {
            agent: Some(call.agent.clone()),
            key: None,
            action: call.action,
            input,
            priority: 0,
            run_at: None,
            limits: Default::default(),
            max_attempts: None,
            backoff: None,
            retry_timeouts: true,
            wait_for_budget: false,
            depends_on: Vec::new(),
            correlation_id: self.correlation_id.clone(),
        };
        let submitter = Submitter {
            actor: self.actor.clone(),
            parent: Some((
                self.chain.execution_id.clone(),
                self.chain.root_execution_id.clone(),
            )),
        };
        match submit::submit(&self.pipeline, &submitter, vec![spec], None).await {
            Ok((mut rows, _)) => {
                self.pipeline.task_wake.notify_one();
                Ok(rows.pop().expect("one task").id)
            }
            Err(SubmitError::AgentNotFound(name)) => Err(CallError::Denied(format!(
                "there is no agent {name:?} this agent may call"
            ))),
            Err(e @ SubmitError::QueueFull { .. }) => {
                Err(refused("queue_full", e.to_string(), true))
            }
            Err(SubmitError::Invalid { code, message }) => {
                Err(refused(code.as_str(), message, false))
            }
            Err(e) => {
                tracing::error!(error = %e, "an agent's task submission failed");
                Err(refused(
                    "internal",
                    "the host failed to submit the task",
                    true,
                ))
            }
        }
    }

    /// Waits for a task of an agent the grant allows, polling its row.
    async fn wait(
        &self,
        id: String,
        grant: AgentsGrant,
        until: Instant,
    ) -> Result<Option<String>, CallError> {
        let denied = || CallError::Denied(format!("there is no task {id:?} this agent may read"));
        let mut pause = Duration::from_millis(10);
        loop {
            let task = match tasks::get(&self.pipeline.db, &self.tenant.id, &id).await {
                Ok(task) if grant.allows(&task.agent_name) => task,
                Ok(_) | Err(DbError::NotFound) => return Err(denied()),
                Err(e) => {
                    tracing::error!(error = %e, "reading a task for an agent failed");
                    return Err(refused(
                        "internal",
                        "the host failed to read the task",
                        true,
                    ));
                }
            };
            match task.state() {
                TaskState::Succeeded => return Ok(Some(task.result.unwrap_or_default())),
                state @ (TaskState::Failed | TaskState::Cancelled) => {
                    let error = task.error.map(|e| e.0).unwrap_or_else(|| {
                        TaskError::new(state.as_str(), "the task did not succeed", false)
                    });
                    return Err(failed(&error.code, error.message, error.retryable));
                }
                _ => {}
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
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
        InvokeError::AgentDeleted { agent } => {
            CallError::Denied(format!("there is no agent {agent:?} this agent may call"))
        }
        InvokeError::Input(refusal) => {
            let code = match refusal {
                crate::runtime::InputRefusal::UnknownAction { .. } => "unknown_action",
                crate::runtime::InputRefusal::Invalid { .. } => "invalid_input",
            };
            refused(code, refusal.to_string(), false)
        }
        InvokeError::Quota(denial) => refused(denial.code().as_str(), denial.message(), true),
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
