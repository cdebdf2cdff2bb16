//! Calls between agents under `corral run`: the agents named with `--call NAME=PATH`
//! are local component files, and each may call the others, under the same limits,
//! bounded in depth and refused in cycles, each call at most the time its caller has
//! left. Tasks they submit run at once in the background, each under its own timeout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;

use crate::limits::Limits;
use crate::policy::{AgentsGrant, Grants};
use crate::runtime::bindings::corral::agent::agents::CallError;
use crate::runtime::capabilities::agents::{
    AgentCaller, CallChain, ChildCall, ChildResult, Rollup, failed, refused,
};
use crate::runtime::{Execution, InvokeRequest, Outcome, Providers, Runtime};

/// How deep local calls may go, as `corral serve` allows by default.
pub const MAX_DEPTH: usize = 4;

/// A task's end, once it has one.
type TaskEnd = Option<Result<String, CallError>>;

/// The local agents, and what the calls ran.
pub struct LocalAgents {
    runtime: Arc<Runtime>,
    components: BTreeMap<String, PathBuf>,
    limits: Limits,
    /// Every call that ran, in the order they finished, with its depth.
    pub ran: Mutex<Vec<(usize, String, Execution)>>,
    /// Tasks submitted by the agents: each runs at once in the background (no queue,
    /// no retries: this is one process for one run), by id, with its agent's name.
    tasks:
        Mutex<std::collections::HashMap<String, (String, tokio::sync::watch::Receiver<TaskEnd>)>>,
}

impl LocalAgents {
    /// Agents `components` (name → file) run by `runtime` under `limits`.
    pub fn new(
        runtime: Arc<Runtime>,
        components: BTreeMap<String, PathBuf>,
        limits: Limits,
    ) -> Arc<LocalAgents> {
        Arc::new(LocalAgents {
            runtime,
            components,
            limits,
            ran: Mutex::new(Vec::new()),
            tasks: Mutex::default(),
        })
    }

    /// The grant that lets an agent call every local agent.
    pub fn grants(&self) -> Grants {
        Grants {
            agents: (!self.components.is_empty())
                .then(|| AgentsGrant::new(self.components.keys().cloned().collect())),
            ..Grants::default()
        }
    }

    /// The caller for the execution at the end of `chain`.
    pub fn caller(self: &Arc<Self>, chain: CallChain) -> Arc<dyn AgentCaller> {
        Arc::new(LocalCaller {
            agents: self.clone(),
            chain,
        })
    }
}

struct LocalCaller {
    agents: Arc<LocalAgents>,
    chain: CallChain,
}

impl AgentCaller for LocalCaller {
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

    fn call(&self, call: ChildCall) -> BoxFuture<'_, ChildResult> {
        Box::pin(async move {
            match self.run(call).await {
                Ok(result) => result,
                Err(error) => ChildResult {
                    result: Err(error),
                    rollup: Rollup::default(),
                },
            }
        })
    }
}

impl LocalCaller {
    /// Starts the task in the background, as a call with a deadline of its own.
    async fn submit(&self, call: ChildCall) -> Result<String, CallError> {
        if !self.agents.components.contains_key(&call.agent) {
            return Err(CallError::Denied(format!(
                "there is no agent {:?} this agent may call",
                call.agent
            )));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let (end, ended) = tokio::sync::watch::channel(None);
        self.agents
            .tasks
            .lock()
            .expect("tasks lock")
            .insert(id.clone(), (call.agent.clone(), ended));
        let caller = LocalCaller {
            agents: self.agents.clone(),
            chain: self.chain.clone(),
        };
        let call = ChildCall {
            deadline: Instant::now() + self.agents.limits.timeout,
            ..call
        };
        tokio::spawn(async move {
            let result = match caller.run(call).await {
                Ok(done) => done.result,
                Err(error) => Err(error),
            };
            let _ = end.send(Some(result));
        });
        Ok(id)
    }

    async fn wait(
        &self,
        id: String,
        grant: AgentsGrant,
        until: Instant,
    ) -> Result<Option<String>, CallError> {
        let found = self
            .agents
            .tasks
            .lock()
            .expect("tasks lock")
            .get(&id)
            .cloned();
        let Some((_, mut ended)) = found.filter(|(agent, _)| grant.allows(agent)) else {
            return Err(CallError::Denied(format!(
                "there is no task {id:?} this agent may read"
            )));
        };
        let waited = tokio::time::timeout_at(
            tokio::time::Instant::from_std(until),
            ended.wait_for(Option::is_some),
        )
        .await;
        match waited {
            Ok(Ok(end)) => end.clone().expect("ended").map(Some),
            _ => Ok(None),
        }
    }

    async fn run(&self, call: ChildCall) -> Result<ChildResult, CallError> {
        self.chain.check(&call.agent, MAX_DEPTH)?;
        let Some(path) = self.agents.components.get(&call.agent) else {
            return Err(CallError::Denied(format!(
                "there is no agent {:?} this agent may call",
                call.agent
            )));
        };
        let bytes = std::fs::read(path).map_err(|e| {
            refused(
                "unavailable",
                format!("reading {}: {e}", path.display()),
                false,
            )
        })?;
        let component = self.agents.runtime.load(bytes).await.map_err(|e| {
            refused(
                "unavailable",
                format!("{} cannot be loaded: {e}", path.display()),
                false,
            )
        })?;
        let left = call.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(refused(
                "deadline_exceeded",
                "the calling invocation has no time left",
                false,
            ));
        }
        let limits = Limits {
            timeout: self.agents.limits.timeout.min(left),
            ..self.agents.limits
        };
        let id = uuid::Uuid::now_v7().to_string();
        let chain = self.chain.child(&call.agent, &id);
        let depth = chain.agents.len() - 1;
        let mut request =
            InvokeRequest::new(call.action, call.input, limits).with_grants(self.agents.grants());
        request.execution_id = Some(id);
        request.agent_name = Some(call.agent.clone());
        request.providers = Providers {
            agents: Some(self.agents.caller(chain)),
            ..Providers::default()
        };
        let execution = self
            .agents
            .runtime
            .invoke_nested(&component, request)
            .await
            .map_err(|e| refused("internal", e.to_string(), true))?;
        let mut rollup = execution.usage.agents.subtree;
        rollup.add(Rollup {
            executions: 1,
            fuel: execution.usage.fuel,
            cost_picodollars: 0,
        });
        let result = match (&execution.outcome, &execution.output) {
            (Outcome::Succeeded, Some(output)) => Ok(output.clone()),
            (outcome, _) => {
                let (code, message, retryable) = execution
                    .error
                    .as_ref()
                    .map_or((outcome.as_str().to_string(), String::new(), false), |e| {
                        (e.code.clone(), e.message.clone(), e.retryable)
                    });
                Err(failed(
                    outcome.as_str(),
                    format!("{code}: {message}"),
                    retryable,
                ))
            }
        };
        self.agents
            .ran
            .lock()
            .expect("calls lock")
            .push((depth, call.agent, execution));
        Ok(ChildResult { result, rollup })
    }
}
