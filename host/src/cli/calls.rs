//! Calls between agents under `corral run`: the agents named with `--call NAME=PATH`
//! are local component files, and each may call the others, under the same limits,
//! bounded in depth and refused in cycles, each call at most the time its caller has
//! left.

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

/// The local agents, and what the calls ran.
pub struct LocalAgents {
    runtime: Arc<Runtime>,
    components: BTreeMap<String, PathBuf>,
    limits: Limits,
    /// Every call that ran, in the order they finished, with its depth.
    pub ran: Mutex<Vec<(usize, String, Execution)>>,
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
