//! Running one invocation: a fresh `Store` from the agent's `InstancePre`, the export
//! called under every limit, and the ending classified into an [`Outcome`].
//!
//! Before the [`Execution`] is returned, every secret value the guest read is replaced
//! with `[redacted]` in its logs, output and error (see
//! [`Redactor`](super::capabilities::config::Redactor)).
//!
//! Classification reads what the host *recorded* — the timeout firing, the log
//! buffer's overflow flag, the limiter's denials, the typed [`Trap`] — never the text
//! of an error.

use std::time::Instant;

use wasmtime::{Store, Trap};

use super::bindings::{AgentInfo, AgentPre, Context, Invocation};
use super::capabilities::Providers;
use super::capabilities::config::Redactor;
use super::capabilities::llm::LlmAllowance;
use super::outcome::{Execution, ExecutionError, Outcome, Usage};
use super::state::HostState;
use super::{Interruption, LoadError, LoadedAgent, RunError, Runtime};
use crate::limits::Limits;
use crate::policy::Grants;

/// One request to run an action of a loaded agent.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// The action to run.
    pub action: String,
    /// The input, as JSON text.
    pub input: String,
    /// The limits to run under.
    pub limits: Limits,
    /// The execution id; a fresh UUIDv7 when `None`.
    pub execution_id: Option<String>,
    /// The caller's correlation id, passed to the guest.
    pub correlation_id: Option<String>,
    /// The agent name the guest sees; its described name when `None`.
    pub agent_name: Option<String>,
    /// Capabilities beyond the sandbox; none by default.
    pub grants: Grants,
    /// What serves the granted capabilities; nothing by default.
    pub providers: Providers,
    /// Stops the run from outside when it fires (`true`); never, when `None`.
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
    /// What the budgets leave for model calls; unbounded by default.
    pub llm_allowance: LlmAllowance,
    /// The execution's span (W3C trace context), sent as `traceparent` with its
    /// outbound HTTP requests and model calls; none by default.
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

impl InvokeRequest {
    /// A request for `action` with `input` under `limits`.
    pub fn new(action: impl Into<String>, input: impl Into<String>, limits: Limits) -> Self {
        InvokeRequest {
            action: action.into(),
            input: input.into(),
            limits,
            execution_id: None,
            correlation_id: None,
            agent_name: None,
            grants: Grants::default(),
            providers: Providers::default(),
            cancel: None,
            llm_allowance: LlmAllowance::default(),
            trace: None,
        }
    }

    /// The same request with `grants`.
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }
}

/// How the guest part of a run ended, before classification.
enum Ended {
    Returned(Result<String, super::bindings::AgentError>),
    Failed(wasmtime::Error),
    TimedOut,
    Cancelled,
}

/// Resolves once `cancel` fires; never, without one (or once its sender is gone).
async fn cancelled(cancel: Option<tokio::sync::watch::Receiver<bool>>) {
    match cancel {
        Some(mut cancel) => {
            if cancel.wait_for(|&c| c).await.is_err() {
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending().await,
    }
}

impl Runtime {
    fn new_store(
        &self,
        limits: &Limits,
        grants: &Grants,
        providers: &Providers,
    ) -> Result<Store<HostState>, RunError> {
        let state = HostState::new(limits, self.config.bounds, grants, providers);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| RunError::Setup(e.to_string()))?;
        match self.config.engine.interruption {
            Interruption::FuelYield { interval } => store
                .fuel_async_yield_interval(Some(interval))
                .map_err(|e| RunError::Setup(e.to_string()))?,
            Interruption::Epoch { .. } => {
                store.set_epoch_deadline(1);
                store.epoch_deadline_async_yield_and_update(1);
            }
        }
        Ok(store)
    }

    /// Runs one invocation. Every guest failure is an [`Outcome`] in the returned
    /// [`Execution`]; `Err` means the host itself could not set up the run.
    pub async fn invoke(
        &self,
        agent: &LoadedAgent,
        request: InvokeRequest,
    ) -> Result<Execution, RunError> {
        let _slot = self
            .instances
            .acquire()
            .await
            .expect("instance semaphore closed");
        self.run(agent, request).await
    }

    /// Runs an invocation made by another one (a call between agents). It does not
    /// wait for an instance slot: its caller holds one and waits for it, so waiting
    /// could deadlock. Calls are bounded in depth, so this stays bounded too.
    pub async fn invoke_nested(
        &self,
        agent: &LoadedAgent,
        request: InvokeRequest,
    ) -> Result<Execution, RunError> {
        self.run(agent, request).await
    }

    async fn run(
        &self,
        agent: &LoadedAgent,
        request: InvokeRequest,
    ) -> Result<Execution, RunError> {
        let started = Instant::now();
        let id = request
            .execution_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let limits = request.limits;

        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&request.input) {
            return Ok(Execution {
                id,
                action: request.action,
                outcome: Outcome::InvalidInput,
                output: None,
                error: Some(ExecutionError {
                    code: "invalid_input".into(),
                    message: format!("the input is not valid JSON: {e}"),
                    retryable: false,
                }),
                usage: Usage {
                    wall_time: started.elapsed(),
                    ..Usage::default()
                },
                logs: Vec::new(),
                denials: Vec::new(),
                llm_calls: Vec::new(),
            });
        }

        let mut store = self.new_store(&limits, &request.grants, &request.providers)?;
        store.data_mut().egress.trace = request.trace.clone();
        store.data_mut().caps.llm.trace = request.trace;
        store.data_mut().caps.agents.start(started + limits.timeout);
        store
            .data_mut()
            .caps
            .llm
            .start(started + limits.timeout, request.llm_allowance);
        let invocation = Invocation {
            action: request.action.clone(),
            input: request.input,
            context: Context {
                execution_id: id.clone(),
                agent_name: request
                    .agent_name
                    .unwrap_or_else(|| agent.metadata.name.clone()),
                agent_version: agent.metadata.version.clone(),
                correlation_id: request.correlation_id,
            },
        };

        let run = async {
            let instance = agent.pre.instantiate_async(&mut store).await?;
            instance
                .corral_agent_handler()
                .call_call(&mut store, &invocation)
                .await
        };
        // Dropping the call's future (at the timeout, or on cancellation) unwinds the
        // guest's fiber; the store stays usable for reading what was used.
        let ended = tokio::select! {
            ended = tokio::time::timeout(limits.timeout, run) => match ended {
                Ok(Ok(returned)) => Ended::Returned(returned),
                Ok(Err(error)) => Ended::Failed(error),
                Err(_) => Ended::TimedOut,
            },
            () = cancelled(request.cancel) => Ended::Cancelled,
        };
        let wall_time = started.elapsed();

        let remaining = store.get_fuel().unwrap_or(0);
        let state = store.data();
        let memory = state.limiter.report();
        let log_exceeded = state.logs.exceeded();
        let (logs, log_bytes) = state.logs.take();
        let (http, mut denials) = state.egress.report();
        // Each capability keeps its own list: HTTP's come first, then key-value state's,
        // then calls'.
        denials.extend_from_slice(state.caps.kv.denials());
        denials.extend_from_slice(state.caps.agents.denials());
        denials.extend_from_slice(state.caps.config.denials());
        denials.extend_from_slice(state.caps.llm.denials());
        let llm_calls = state.caps.llm.calls().to_vec();
        let redactor = state.caps.config.redactor();
        let mut usage = Usage {
            fuel: limits.fuel.saturating_sub(remaining),
            peak_memory_bytes: memory.peak_bytes,
            wall_time,
            log_bytes,
            output_bytes: 0,
            http,
            kv: state.caps.kv.usage(),
            config: state.caps.config.usage(),
            agents: state.caps.agents.usage(),
            llm: state.caps.llm.usage(),
        };

        let (outcome, output, error) = match ended {
            Ended::Cancelled => (
                Outcome::Cancelled,
                None,
                Some(host_error(
                    "cancelled",
                    "the run was cancelled and stopped".into(),
                    false,
                )),
            ),
            Ended::TimedOut => (
                Outcome::TimedOut,
                None,
                Some(host_error(
                    "timed_out",
                    format!(
                        "the agent ran past its {:?} timeout and was stopped",
                        limits.timeout
                    ),
                    true,
                )),
            ),
            Ended::Returned(Ok(output)) => {
                usage.output_bytes = output.len() as u64;
                if usage.output_bytes > limits.output_bytes {
                    (
                        Outcome::OutputTooLarge,
                        None,
                        Some(host_error(
                            "output_too_large",
                            format!(
                                "the agent returned {} bytes of output; the limit is {}",
                                usage.output_bytes, limits.output_bytes
                            ),
                            false,
                        )),
                    )
                } else if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
                    (
                        Outcome::AgentError,
                        None,
                        Some(host_error(
                            "invalid_output",
                            format!("the agent returned output that is not JSON: {e}"),
                            false,
                        )),
                    )
                } else {
                    (Outcome::Succeeded, Some(output), None)
                }
            }
            Ended::Returned(Err(agent_error)) => {
                let outcome = if agent_error.code == "invalid_input" {
                    Outcome::InvalidInput
                } else {
                    Outcome::AgentError
                };
                let error = ExecutionError {
                    code: agent_error.code,
                    message: agent_error.message,
                    retryable: agent_error.retryable,
                };
                (outcome, None, Some(error))
            }
            Ended::Failed(error) => {
                let (outcome, error) =
                    classify_failure(&error, log_exceeded, memory.memory_denied, &limits);
                (outcome, None, Some(error))
            }
        };

        let mut execution = Execution {
            id,
            action: request.action,
            outcome,
            output,
            error,
            usage,
            logs,
            denials,
            llm_calls,
        };
        redact(&mut execution, &redactor);
        Ok(execution)
    }

    /// Calls `describe` on a fresh instance under the runtime's describe limits.
    pub(crate) async fn describe(&self, pre: &AgentPre<HostState>) -> Result<AgentInfo, LoadError> {
        let limits = self.config.describe_limits;
        let mut store = self
            .new_store(&limits, &Grants::default(), &Providers::default())
            .map_err(|e| LoadError::Internal(e.to_string()))?;
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance
                .corral_agent_handler()
                .call_describe(&mut store)
                .await
        };
        match tokio::time::timeout(limits.timeout, run).await {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(error)) => {
                let state = store.data();
                let (outcome, detail) = classify_failure(
                    &error,
                    state.logs.exceeded(),
                    state.limiter.report().memory_denied,
                    &limits,
                );
                Err(LoadError::DescribeFailed {
                    outcome,
                    message: detail.message,
                })
            }
            Err(_) => Err(LoadError::DescribeFailed {
                outcome: Outcome::TimedOut,
                message: format!("describe() did not return within {:?}", limits.timeout),
            }),
        }
    }
}

/// Replaces the secret values the guest read wherever it wrote them: its logs, its
/// output and its error. Nothing of the guest's reaches the record unredacted.
fn redact(execution: &mut Execution, redactor: &Redactor) {
    if redactor.is_empty() {
        return;
    }
    for entry in &mut execution.logs {
        entry.message = redactor.text(&entry.message);
    }
    if let Some(output) = &mut execution.output {
        *output = redactor.json(output);
    }
    if let Some(error) = &mut execution.error {
        error.code = redactor.text(&error.code);
        error.message = redactor.text(&error.message);
    }
    for call in &mut execution.llm_calls {
        for text in [&mut call.prompt, &mut call.answer].into_iter().flatten() {
            *text = redactor.text(text);
        }
    }
}

fn host_error(code: &str, message: String, retryable: bool) -> ExecutionError {
    ExecutionError {
        code: code.into(),
        message,
        retryable,
    }
}

/// Classifies a guest that stopped with an error, from what the host recorded.
fn classify_failure(
    error: &wasmtime::Error,
    log_exceeded: bool,
    memory_denied: bool,
    limits: &Limits,
) -> (Outcome, ExecutionError) {
    let trap = error.downcast_ref::<Trap>().copied();
    // The pooling allocator had no slot: the host's shortage, not the guest's fault.
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return (
            Outcome::HostFailure,
            host_error(
                "host_failure",
                "the host had no instance slot free to run the agent".into(),
                true,
            ),
        );
    }
    if log_exceeded {
        return (
            Outcome::LogLimitExceeded,
            host_error(
                "log_limit_exceeded",
                format!(
                    "the agent logged more than its limit of {} bytes and was stopped",
                    limits.log_bytes
                ),
                false,
            ),
        );
    }
    if trap == Some(Trap::OutOfFuel) {
        return (
            Outcome::FuelExhausted,
            host_error(
                "fuel_exhausted",
                format!(
                    "the agent used all of its {} fuel and was stopped",
                    limits.fuel
                ),
                false,
            ),
        );
    }
    if memory_denied {
        return (
            Outcome::MemoryLimitExceeded,
            host_error(
                "memory_limit_exceeded",
                format!(
                    "the agent needed more than its {} bytes of memory and then failed",
                    limits.memory_bytes
                ),
                false,
            ),
        );
    }
    let message = format!("{error:#}");
    match trap {
        Some(trap) => (
            Outcome::Trapped,
            host_error(trap_kind(trap), message, false),
        ),
        None if error.downcast_ref::<wasmtime_wasi::I32Exit>().is_some() => {
            (Outcome::Trapped, host_error("exit", message, false))
        }
        None => (
            Outcome::Trapped,
            host_error("host_call_failed", message, false),
        ),
    }
}

/// A stable snake_case name for a trap.
pub fn trap_kind(trap: Trap) -> &'static str {
    match trap {
        Trap::StackOverflow => "stack_overflow",
        Trap::MemoryOutOfBounds => "memory_out_of_bounds",
        Trap::HeapMisaligned => "heap_misaligned",
        Trap::TableOutOfBounds => "table_out_of_bounds",
        Trap::IndirectCallToNull => "indirect_call_to_null",
        Trap::BadSignature => "bad_signature",
        Trap::IntegerOverflow => "integer_overflow",
        Trap::IntegerDivisionByZero => "integer_division_by_zero",
        Trap::BadConversionToInteger => "bad_conversion_to_integer",
        Trap::UnreachableCodeReached => "unreachable",
        Trap::Interrupt => "interrupt",
        Trap::OutOfFuel => "fuel_exhausted",
        Trap::CannotEnterComponent => "cannot_enter_component",
        _ => "other",
    }
}
