//! The invocation pipeline: everything between "run this action of this agent" and a
//! committed execution record.
//!
//! One [`Invocations`] service per server. For each [`Invocation`] it resolves the
//! version, loads the component, takes the agent's and tenant's quotas, applies the
//! limits, builds the capability providers, runs the guest in a fresh sandbox, prices
//! the run, and hands the record (with its capability denials as audit events) to the
//! group-commit writer, returning once it is committed. Every caller goes through it:
//! the HTTP invoke route, calls between agents ([`calls`]), and task workers. Each maps
//! [`InvokeError`] once, into its own terms.
//!
//! Invariants:
//! - An invocation that was admitted runs to its end (or its own limits) and is
//!   recorded and charged exactly once, whoever waits for it: [`Invocations::run`]
//!   detaches the run from its caller, so a client that hangs up loses nothing.
//! - The quota lease is released only after the record (and its charge) is committed.

pub mod calls;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanContext, TraceContextExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as DbJson;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::ToSchema;

use crate::cache::TtlCache;
use crate::costs::{PriceModel, format_dollars};
use crate::db::agents::{self, Agent, AgentVersion};
use crate::db::audit::AuditEvent;
use crate::db::config::DbConfigSource;
use crate::db::executions::ExecutionRecord;
use crate::db::kv::DbKvStore;
use crate::db::tenants::Tenant;
use crate::db::writer::{ExecutionWriter, KeyCompletion, WorkflowSteps, WriteError};
use crate::db::{self, Db, DbError, idempotency, usage};
use crate::limits::Limits;
use crate::quota::{self, Admission, AdmitError, AdmitRequest, Enforcer, Scope};
use crate::runtime::capabilities::agents::{AgentCaller, CallChain, Rollup};
use crate::runtime::capabilities::kv::KvStore;
use crate::runtime::capabilities::llm::{TokenMeter, TokenShortage};
use crate::runtime::{
    Denial, ExecutionError, InputRefusal, InvokeRequest, LoadedAgent, Outcome, Providers, Runtime,
    Usage,
};
use crate::secrets::SecretsKey;
use crate::tasks::{TaskAttempt, TaskCompletion};

/// Bytes of input and output kept in the execution record.
const EXCERPT_BYTES: usize = 1024;

/// What the pipeline needs from the server's configuration.
#[derive(Debug, Clone)]
pub struct InvocationSettings {
    /// The host's limits: every invocation's defaults and ceiling.
    pub limits: Limits,
    /// Prices.
    pub prices: PriceModel,
    /// How deep calls between agents may go (a root's callees are at depth 1).
    pub max_call_depth: usize,
    /// The key that opens agents' secrets; `None` when none is configured.
    pub secrets_key: Option<SecretsKey>,
    /// The operator's models; `None` when none are configured.
    pub llm: Option<Arc<crate::llm::Catalogue>>,
    /// The longest a task attempt may run (`limits.timeout` is the synchronous ceiling).
    pub task_timeout: Duration,
    /// How long an idempotency key's reservation holds without renewal.
    pub idempotency_lease: Duration,
    /// How long an idempotency key lives.
    pub idempotency_ttl: Duration,
    /// How long records are kept.
    pub retention: RetentionSettings,
    /// Whether per-agent metrics carry the agent's name as a label.
    pub metrics_agent_labels: bool,
}

/// How long the host keeps records, at most (tenants may shorten each), and how often
/// it purges.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Executions.
    pub executions: Duration,
    /// Executions' logs.
    pub logs: Duration,
    /// Audit events.
    pub audit: Duration,
    /// The least a tenant may keep its audit events.
    pub audit_floor: Duration,
    /// Time between purges.
    pub interval: Duration,
    /// Most bytes of compiled artifacts kept on this node's disk.
    pub artifact_bytes: u64,
    /// How old an unneeded artifact must be before it is collected.
    pub artifact_min_age: Duration,
}

/// Who asked for an invocation: the context of its record and its audit events.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The tenant acting.
    pub tenant_id: String,
    /// The API key that asked (for a call between agents: whoever invoked the root).
    pub key_id: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The span this was asked from (W3C trace context): the request's `traceparent`,
    /// the calling execution's span, or the span a task was submitted from.
    pub trace: Option<SpanContext>,
}

impl Actor {
    /// An audit event by this actor, with result `ok`.
    pub fn event(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: Option<&str>,
    ) -> AuditEvent {
        AuditEvent {
            id: db::new_id(),
            tenant_id: self.tenant_id.clone(),
            occurred_at: db::now(),
            actor_key_id: self.key_id.clone(),
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.map(Into::into),
            before: None,
            after: None,
            result: "ok".into(),
            request_id: self.request_id.clone(),
            client_addr: self.client_addr.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// One run of an agent: what to run, on whose behalf, and where in a call tree.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Who asked.
    pub actor: Actor,
    /// The agent.
    pub agent: Agent,
    /// Its tenant.
    pub tenant: Tenant,
    /// The action.
    pub action: String,
    /// The input, as JSON text.
    pub input: String,
    /// A version to run instead of the active one (id or semver).
    pub version: Option<String>,
    /// The caller's correlation id.
    pub correlation_id: Option<String>,
    /// The effective limits (before quotas lower the fuel): see [`Invocations::limits`].
    pub limits: Limits,
    /// When the request arrived.
    pub queued_at: chrono::DateTime<chrono::Utc>,
    /// The request's idempotency key, reserved by the caller: completed with the
    /// record, released if the invocation fails before it ran.
    pub idempotency_key: Option<String>,
    /// The chain of calls that led here; `None` for a root.
    pub chain: Option<CallChain>,
    /// The execution's id, when the caller chose it (a task attempt's is chosen at
    /// claim); a fresh one otherwise.
    pub execution_id: Option<String>,
    /// The task attempt this runs as: completed with the record.
    pub task: Option<TaskAttempt>,
    /// Stops the guest when it fires (a task cancelled while it runs).
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Invocation {
    /// A root invocation by `actor` of `action` of `agent` with `input`, under
    /// `limits`: no version pinned, no correlation id, key, task or cancellation.
    pub fn new(
        actor: Actor,
        agent: Agent,
        tenant: Tenant,
        action: String,
        input: String,
        limits: Limits,
        queued_at: chrono::DateTime<chrono::Utc>,
    ) -> Invocation {
        Invocation {
            actor,
            agent,
            tenant,
            action,
            input,
            version: None,
            correlation_id: None,
            limits,
            queued_at,
            idempotency_key: None,
            chain: None,
            execution_id: None,
            task: None,
            cancel: None,
        }
    }
}

/// Why an invocation did not run. (One that ran is never an error, whatever its
/// outcome: see [`Invoked`].)
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The agent is paused.
    #[error("agent {agent:?} is paused; resume it to invoke it")]
    Paused {
        /// The agent's name.
        agent: String,
    },
    /// The agent has no active version and none was named.
    #[error("agent {agent:?} has no active version; upload one first")]
    NoActiveVersion {
        /// The agent's name.
        agent: String,
    },
    /// The named version does not exist.
    #[error("version {version:?} of agent {agent:?}")]
    VersionNotFound {
        /// The agent's name.
        agent: String,
        /// The version asked for.
        version: String,
    },
    /// The agent was deleted (after a task of it was submitted).
    #[error("agent {agent:?} was deleted")]
    AgentDeleted {
        /// The agent's name.
        agent: String,
    },
    /// The action is not one the agent has, or the input does not satisfy its schema:
    /// refused before anything ran, and not billed.
    #[error("{0}")]
    Input(InputRefusal),
    /// A quota of the agent or its tenant refused it (recorded as an audit event).
    #[error("{}", .0.message())]
    Quota(quota::Denial),
    /// The host could not load the component or run the sandbox.
    #[error("the host failed: {0}")]
    Host(String),
    /// The server is shutting down and records no more.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The database failed.
    #[error(transparent)]
    Db(Arc<DbError>),
}

impl From<DbError> for InvokeError {
    fn from(e: DbError) -> Self {
        InvokeError::Db(Arc::new(e))
    }
}

/// The receipt of an invocation that ran: what the invoke route answers and what an
/// idempotent retry gets back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = InvokeResponse)]
pub struct Receipt {
    /// The execution's id.
    pub execution_id: String,
    /// The agent's name.
    pub agent: String,
    /// The version that ran (semver).
    pub version: String,
    /// The action.
    pub action: String,
    /// How it ended.
    pub outcome: String,
    /// The output, when it succeeded.
    pub output: Option<Value>,
    /// The error, when it did not.
    pub error: Option<ExecutionError>,
    /// What it used.
    pub usage: Usage,
    /// Capability requests refused during the run (absent when there were none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<Denial>,
    /// Dollars, as an exact decimal string.
    pub cost: String,
    /// This execution's cost plus that of every execution it called, all the way down.
    pub total_cost: String,
    /// The caller's correlation id.
    pub correlation_id: Option<String>,
    /// The execution that called this one (absent for a root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<String>,
    /// The root of this one's call tree (itself for a root).
    pub root_execution_id: String,
}

/// An invocation that ran and was recorded.
#[derive(Debug, Clone)]
pub struct Invoked {
    /// The receipt, as JSON.
    pub response: Value,
    /// The execution's id.
    pub execution_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The output (JSON text), when it succeeded.
    pub output: Option<String>,
    /// The error, when it did not.
    pub error: Option<ExecutionError>,
    /// This execution and everything it called.
    pub rollup: Rollup,
}

/// Cache keys: (tenant id, agent name); (tenant id, agent id, version id or semver).
type AgentKey = (String, String);
type VersionKey = (String, String, String);

/// Live agents by (tenant id, name).
pub type AgentCache = TtlCache<AgentKey, Agent>;

/// A live agent of `tenant_id` by name from `agents`, or on a miss read through `tx`,
/// not the pool. (On SQLite, a transaction that holds the write lock and waits for
/// another connection can wait for one that waits for the lock: the pool runs dry
/// under load.)
pub async fn agent_in(
    agents: &AgentCache,
    tx: &mut crate::db::Tx,
    tenant_id: &str,
    name: &str,
) -> Result<Agent, DbError> {
    let key = (tenant_id.to_string(), name.to_string());
    if let Some(agent) = agents.get(&key) {
        return Ok(agent);
    }
    let agent = agents::by_name_in(tx, tenant_id, name).await?;
    agents.insert(key, agent.clone());
    Ok(agent)
}

/// The pipeline. Cheap to clone: everything is shared.
#[derive(Clone)]
pub struct Invocations {
    /// The database.
    pub db: Db,
    /// The sandbox.
    pub runtime: Arc<Runtime>,
    /// The group-commit writer.
    pub writer: ExecutionWriter,
    /// Settings.
    pub settings: Arc<InvocationSettings>,
    /// Quota enforcement.
    pub quotas: Arc<Enforcer>,
    /// Live agents by (tenant id, name).
    pub agents: Arc<AgentCache>,
    /// Versions by (tenant id, agent id, id or semver); versions never change.
    pub versions: Arc<TtlCache<VersionKey, AgentVersion>>,
    /// Tenants (with their policies) by id.
    pub tenants: Arc<TtlCache<String, Tenant>>,
    /// Wakes this node's task workers when a task is submitted here.
    pub task_wake: Arc<tokio::sync::Notify>,
    /// Wakes this node's workflow advancer when a task ends here.
    pub workflow_wake: Arc<tokio::sync::Notify>,
    /// This node's name in leases (task attempts, idempotency keys): unique per process.
    pub node: Arc<str>,
    /// Counters for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Invocations {
    /// The pipeline over these parts, with empty caches.
    pub fn new(
        db: Db,
        runtime: Arc<Runtime>,
        writer: ExecutionWriter,
        settings: InvocationSettings,
        quotas: Enforcer,
    ) -> Invocations {
        let owned = vec![
            (
                "compile",
                "How long compiles took",
                Some(prometheus_client::registry::Unit::Seconds),
                runtime.compile_seconds(),
            ),
            (
                "group_commit_batch_size",
                "Jobs (execution records, lone audit appends) per group commit",
                None,
                writer.metrics().batch_size.clone(),
            ),
            (
                "group_commit",
                "How long each group commit's transaction took",
                Some(prometheus_client::registry::Unit::Seconds),
                writer.metrics().seconds.clone(),
            ),
        ];
        let metrics = crate::metrics::Metrics::new(settings.metrics_agent_labels, owned);
        let agents = Arc::new(AgentCache::new(crate::cache::TTL));
        let workflow_wake = Arc::default();
        Invocations {
            db,
            runtime,
            writer: writer.moving_workflows(WorkflowSteps {
                agents: agents.clone(),
                behind: Arc::clone(&workflow_wake),
            }),
            settings: Arc::new(settings),
            quotas: Arc::new(quotas),
            agents,
            versions: Arc::new(TtlCache::new(Duration::from_secs(3600))),
            tenants: Arc::new(TtlCache::new(crate::cache::TTL)),
            task_wake: Arc::default(),
            workflow_wake,
            node: format!("node-{}", uuid::Uuid::new_v4().simple()).into(),
            metrics: Arc::new(metrics),
        }
    }

    /// A lease on an idempotency key for a request this node runs, from now.
    pub fn idempotency_lease(&self) -> idempotency::Lease<'_> {
        let now = self.quotas.clock().now();
        let lease = chrono::Duration::from_std(self.settings.idempotency_lease).unwrap_or_default();
        idempotency::Lease {
            owner: &self.node,
            now,
            until: now + lease,
            ttl: chrono::Duration::from_std(self.settings.idempotency_ttl)
                .unwrap_or(chrono::Duration::days(1)),
        }
    }

    /// The limits an invocation of `agent` gets before the call's own: the host's,
    /// tightened by the tenant's policy, tightened by the agent's.
    pub fn limits(&self, tenant: &Tenant, agent: &Agent) -> Limits {
        let limits = tenant.policy.0.limits.tighten(self.settings.limits);
        agent.policy.0.limits.tighten(limits)
    }

    /// The limits a task attempt of `agent` gets before the task's own: like
    /// [`limits`](Self::limits), but under the host's task timeout.
    pub fn task_limits(&self, tenant: &Tenant, agent: &Agent) -> Limits {
        let host = Limits {
            timeout: self.settings.task_timeout,
            ..self.settings.limits
        };
        let limits = tenant.policy.0.limits.tighten(host);
        agent.policy.0.limits.tighten(limits)
    }

    /// A live agent of `tenant_id` by name, from the cache or the database.
    pub async fn agent(&self, tenant_id: &str, name: &str) -> Result<Agent, DbError> {
        let key = (tenant_id.to_string(), name.to_string());
        if let Some(agent) = self.agents.get(&key) {
            return Ok(agent);
        }
        let agent = agents::by_name(&self.db, tenant_id, name).await?;
        self.agents.insert(key, agent.clone());
        Ok(agent)
    }

    /// [`Invocations::agent`] for code that holds a write transaction (see [`agent_in`]).
    pub async fn agent_in(
        &self,
        tx: &mut crate::db::Tx,
        tenant_id: &str,
        name: &str,
    ) -> Result<Agent, DbError> {
        agent_in(&self.agents, tx, tenant_id, name).await
    }

    /// [`Invocations::tenant`] for code that holds a write transaction (see
    /// [`Invocations::agent_in`]).
    pub async fn tenant_in(&self, tx: &mut crate::db::Tx, id: &str) -> Result<Tenant, DbError> {
        if let Some(tenant) = self.tenants.get(&id.to_string()) {
            return Ok(tenant);
        }
        let tenant = crate::db::tenants::get_in(tx, id).await?;
        self.tenants.insert(id.into(), tenant.clone());
        Ok(tenant)
    }

    /// A tenant, from the cache or the database.
    pub async fn tenant(&self, id: &str) -> Result<Tenant, DbError> {
        if let Some(tenant) = self.tenants.get(&id.to_string()) {
            return Ok(tenant);
        }
        let tenant = crate::db::tenants::get(&self.db, id).await?;
        self.tenants.insert(id.into(), tenant.clone());
        Ok(tenant)
    }

    /// Runs `invocation` detached from the caller — if the caller stops waiting, the
    /// run still ends and is recorded — and returns once its record is committed. If it
    /// did not run, its idempotency key is released for a retry.
    pub async fn run(&self, invocation: Invocation) -> Result<Invoked, InvokeError> {
        let pipeline = self.clone();
        // The request's span, or the calling execution's: the parent of this one's.
        let caller = tracing::Span::current();
        let detached = tokio::spawn(async move {
            let key = invocation.idempotency_key.clone();
            let tenant_id = invocation.actor.tenant_id.clone();
            let span = execution_span(&caller, &invocation);
            let result = pipeline
                .execute(invocation, &span)
                .instrument(span.clone())
                .await;
            if result.is_err()
                && let Some(key) = &key
            {
                let _ = idempotency::release(&pipeline.db, &tenant_id, key).await;
            }
            result
        });
        match detached.await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "an invocation's task failed");
                Err(InvokeError::Host("the invocation's task failed".into()))
            }
        }
    }

    async fn execute(&self, run: Invocation, span: &tracing::Span) -> Result<Invoked, InvokeError> {
        let (actor, agent, tenant) = (&run.actor, &run.agent, &run.tenant);
        if agent.status == "paused" {
            let mut event = actor.event("agent.invoke", "agent", Some(&agent.id));
            event.result = "denied".into();
            self.audit_alone(event).await;
            return Err(InvokeError::Paused {
                agent: agent.name.clone(),
            });
        }
        let version = self
            .version(run.version.as_deref(), &run.tenant.id, agent)
            .await?;
        let loaded = self.load(&tenant.id, &version).await?;
        loaded
            .check_input(&run.action, &run.input)
            .map_err(InvokeError::Input)?;

        // Quotas last, just before the guest runs: the lease covers the run and the commit.
        let mut limits = run.limits;
        let admission = self.admit(actor, agent, tenant, limits.timeout).await?;
        if let Some(left) = admission.left.fuel {
            limits.fuel = limits.fuel.min(left);
        }

        let clock = self.quotas.clock();
        let execution_id = run.execution_id.clone().unwrap_or_else(db::new_id);
        let trace = crate::telemetry::context::of_span(span, actor.trace.as_ref());
        span.record("execution.id", execution_id.as_str());
        span.record("agent.version", version.version.as_str());
        let chain = match &run.chain {
            Some(parent) => parent.child(&agent.name, &execution_id),
            None => CallChain::root(&agent.name, &execution_id),
        };
        let request = InvokeRequest {
            action: run.action.clone(),
            input: run.input.clone(),
            limits,
            llm_allowance: crate::runtime::capabilities::llm::LlmAllowance {
                tokens: admission.left.tokens,
                picodollars: admission.left.picodollars,
            },
            execution_id: Some(execution_id.clone()),
            correlation_id: run.correlation_id.clone(),
            agent_name: Some(agent.name.clone()),
            grants: agent.policy.0.grants.clone(),
            providers: self.providers(&run, &chain, &trace),
            cancel: run.cancel.clone(),
            trace: Some(trace.clone()),
        };
        let started_at = clock.now();
        let execution = if run.chain.is_some() {
            self.runtime.invoke_nested(&loaded, request).await
        } else {
            self.runtime.invoke(&loaded, request).await
        }
        .map_err(|e| InvokeError::Host(e.to_string()))?;
        let finished_at = clock.now();
        // A host failure is the host's, not the tenant's: recorded, never billed.
        let cost = if execution.outcome == Outcome::HostFailure {
            0
        } else {
            self.settings.prices.cost_picodollars(&execution.usage)
        };
        record_end(span, &execution, cost);
        let mut rollup = execution.usage.agents.subtree;
        rollup.add(Rollup {
            executions: 1,
            fuel: execution.usage.fuel,
            cost_picodollars: cost,
        });

        let receipt = Receipt {
            execution_id: execution_id.clone(),
            agent: agent.name.clone(),
            version: version.version.clone(),
            action: execution.action.clone(),
            outcome: execution.outcome.as_str().into(),
            output: execution
                .output
                .as_deref()
                .map(|o| serde_json::from_str(o).unwrap_or(Value::Null)),
            error: execution.error.clone(),
            usage: execution.usage,
            denials: execution.denials.clone(),
            cost: format_dollars(cost),
            total_cost: format_dollars(rollup.cost_picodollars),
            correlation_id: run.correlation_id.clone(),
            parent_execution_id: run.chain.as_ref().map(|c| c.execution_id.clone()),
            root_execution_id: chain.root_execution_id.clone(),
        };
        let response = serde_json::to_value(&receipt).expect("a receipt serializes");

        // Every refused capability request is on the audit trail, committed with the record,
        // and so is every host failure.
        let mut events: Vec<AuditEvent> = execution
            .denials
            .iter()
            .map(|denial| {
                let mut event = actor.event(
                    &format!("capability.{}", denial.capability),
                    "execution",
                    Some(&execution_id),
                );
                event.result = "denied".into();
                event.after = Some(DbJson(serde_json::json!({
                    "agent": agent.name,
                    "target": denial.target,
                    "reason": denial.reason.as_str(),
                    "detail": denial.detail,
                })));
                event
            })
            .collect();
        if execution.outcome == Outcome::HostFailure {
            let mut event = actor.event("execution.host_failure", "execution", Some(&execution_id));
            event.result = "failed".into();
            event.after = Some(DbJson(serde_json::json!({
                "agent": agent.name,
                "action": execution.action,
                "message": execution.error.as_ref().map(|e| e.message.clone()),
            })));
            events.push(event);
        }
        let capabilities = serde_json::json!({
            "http": execution.usage.http,
            "kv": execution.usage.kv,
            "config": execution.usage.config,
            "agents": execution.usage.agents,
            "llm": execution.usage.llm,
            "denials": execution.denials,
        });
        let record = ExecutionRecord {
            id: execution_id.clone(),
            tenant_id: tenant.id.clone(),
            agent_id: agent.id.clone(),
            agent_name: agent.name.clone(),
            version_id: version.id.clone(),
            version: version.version.clone(),
            action: execution.action,
            outcome: execution.outcome.as_str().into(),
            error_code: execution.error.as_ref().map(|e| e.code.clone()),
            error_message: execution.error.as_ref().map(|e| e.message.clone()),
            input_bytes: run.input.len() as i64,
            input_excerpt: excerpt(&run.input),
            output_bytes: execution.usage.output_bytes as i64,
            output_excerpt: execution.output.as_deref().map(excerpt),
            fuel: execution.usage.fuel as i64,
            peak_memory_bytes: execution.usage.peak_memory_bytes as i64,
            wall_time_us: execution.usage.wall_time.as_micros() as i64,
            log_bytes: execution.usage.log_bytes as i64,
            logs: DbJson(execution.logs),
            queued_at: run.queued_at,
            started_at,
            finished_at,
            cost_picodollars: cost,
            correlation_id: run.correlation_id.clone(),
            actor_key_id: actor.key_id.clone(),
            idempotency_key: run.idempotency_key.clone(),
            parent_execution_id: run.chain.as_ref().map(|c| c.execution_id.clone()),
            root_execution_id: Some(chain.root_execution_id.clone()),
            trace_id: Some(trace.trace_id().to_string()),
            span_id: Some(trace.span_id().to_string()),
            parent_span_id: actor.trace.as_ref().map(|p| p.span_id().to_string()),
            call_depth: (chain.agents.len() - 1) as i32,
            capabilities: DbJson(capabilities),
            replaced_characters: 0,
            record_degraded: false,
            task_id: run.task.as_ref().map(|t| t.task_id.clone()),
            attempt: run.task.as_ref().map(|t| t.attempt as i32),
            output: execution.output.clone(),
            input: agent.policy.0.record_input.then(|| run.input.clone()),
            llm_calls: execution.llm_calls.clone(),
            llm_tokens: i64::try_from(
                execution
                    .usage
                    .llm
                    .input_tokens
                    .saturating_add(execution.usage.llm.output_tokens),
            )
            .unwrap_or(i64::MAX),
        };
        let task = run.task.as_ref().map(|attempt| {
            TaskCompletion::of_run(
                attempt,
                execution.outcome,
                execution.output.as_deref(),
                execution.error.as_ref(),
                // A grant that refused will refuse again; a callee's quota may not.
                execution
                    .denials
                    .iter()
                    .any(|d| d.reason != crate::runtime::DenialReason::Refused),
                finished_at,
            )
        });
        let completion = run.idempotency_key.as_ref().map(|key| KeyCompletion {
            key: key.clone(),
            response: response.clone(),
        });
        // Acknowledge only what is committed.
        let handed = std::time::Instant::now();
        self.writer
            .write(record, completion, task, events)
            .await
            .map_err(|e| match e {
                WriteError::Stopped => InvokeError::ShuttingDown,
                WriteError::Db(e) => InvokeError::Db(e),
            })?;
        let timings = crate::metrics::Timings {
            queue_wait: (started_at - run.queued_at).to_std().unwrap_or_default(),
            commit: handed.elapsed(),
        };
        self.metrics.executed(
            &agent.name,
            execution.outcome,
            &execution.usage,
            cost,
            timings,
        );
        // Only now, with the execution charged, may its slot go to another.
        admission.release().await;
        Ok(Invoked {
            response,
            execution_id,
            outcome: execution.outcome,
            output: execution.output,
            error: execution.error,
            rollup,
        })
    }

    /// The version to run: the named one, else the active one.
    async fn version(
        &self,
        named: Option<&str>,
        tenant_id: &str,
        agent: &Agent,
    ) -> Result<AgentVersion, InvokeError> {
        let version_ref = match (named, &agent.active_version_id) {
            (Some(v), _) => v.to_string(),
            (None, Some(active)) => active.clone(),
            (None, None) => {
                return Err(InvokeError::NoActiveVersion {
                    agent: agent.name.clone(),
                });
            }
        };
        let key = (tenant_id.to_string(), agent.id.clone(), version_ref.clone());
        if let Some(version) = self.versions.get(&key) {
            return Ok(version);
        }
        let version = agents::version(&self.db, tenant_id, &agent.id, &version_ref)
            .await
            .map_err(|e| match e {
                DbError::NotFound => InvokeError::VersionNotFound {
                    agent: agent.name.clone(),
                    version: version_ref,
                },
                e => e.into(),
            })?;
        self.versions.insert(key, version.clone());
        Ok(version)
    }

    /// The loaded agent for a version: from the runtime's memory cache by the version's
    /// content hash, or from its disk artifact (after a restart), or from the database's
    /// component bytes (compiled once per host, then kept on disk). One cache,
    /// bounded by `CORRAL_COMPONENT_CACHE`, holds every loaded agent.
    async fn load(
        &self,
        tenant_id: &str,
        version: &AgentVersion,
    ) -> Result<Arc<LoadedAgent>, InvokeError> {
        if let Some(agent) = self.runtime.cached_agent(&version.sha256).await {
            return Ok(agent);
        }
        let size = version.size_bytes as usize;
        if let Some(agent) = self.runtime.load_compiled(&version.sha256, size).await {
            return Ok(agent);
        }
        let bytes = agents::component(&self.db, tenant_id, &version.id).await?;
        self.runtime
            .load(bytes)
            .await
            .map_err(|e| InvokeError::Host(e.to_string()))
    }

    /// Takes the invocation's place in its agent's and tenant's quotas, or records the
    /// denial and refuses.
    async fn admit(
        &self,
        actor: &Actor,
        agent: &Agent,
        tenant: &Tenant,
        timeout: Duration,
    ) -> Result<Admission, InvokeError> {
        let agent_scope = usage::agent_scope(&agent.id);
        let tenant_scope = usage::tenant_scope(&tenant.id);
        let request = AdmitRequest {
            tenant_id: &tenant.id,
            scopes: [
                Scope {
                    key: &agent_scope,
                    quotas: &agent.policy.0.quotas,
                },
                Scope {
                    key: &tenant_scope,
                    quotas: &tenant.policy.0.quotas,
                },
            ],
            timeout,
        };
        match self.quotas.admit(request).await {
            Ok(admission) => Ok(admission),
            Err(AdmitError::Db(e)) => Err(e.into()),
            Err(AdmitError::Denied(denial)) => {
                self.metrics.quota_refused(denial.code().as_str());
                let mut event = actor.event("agent.invoke", "agent", Some(&agent.id));
                event.result = "denied".into();
                // On the quota clock, so usage reports count it in the period it refused.
                event.occurred_at = self.quotas.clock().now();
                let budget = match &denial {
                    quota::Denial::BudgetExhausted { budget, .. } => Some(*budget),
                    _ => None,
                };
                event.after = Some(DbJson(serde_json::json!({
                    "code": denial.code(),
                    "scope": denial.scope(),
                    "budget": budget,
                    "retry_after_ms": denial.retry_after().as_millis() as u64,
                })));
                self.audit_alone(event).await;
                Err(InvokeError::Quota(denial))
            }
        }
    }

    /// The capability providers of one run: each only when its grant exists.
    fn providers(&self, run: &Invocation, chain: &CallChain, trace: &SpanContext) -> Providers {
        let agent = &run.agent;
        let grants = &agent.policy.0.grants;
        let token_rates: Vec<(String, u64)> = [
            (
                usage::agent_scope(&agent.id),
                agent.policy.0.quotas.tokens_per_minute,
            ),
            (
                usage::tenant_scope(&run.tenant.id),
                run.tenant.policy.0.quotas.tokens_per_minute,
            ),
        ]
        .into_iter()
        .filter_map(|(scope, rate)| rate.map(|per_minute| (format!("tokens:{scope}"), per_minute)))
        .collect();
        Providers {
            llm: grants.llm.as_ref().and_then(|_| self.settings.llm.clone()),
            llm_meter: (grants.llm.is_some() && !token_rates.is_empty()).then(|| {
                Arc::new(TokenRates {
                    quotas: self.quotas.clone(),
                    tenant_id: run.tenant.id.clone(),
                    scopes: token_rates,
                }) as Arc<dyn TokenMeter>
            }),
            agents: grants.agents.as_ref().map(|_| {
                Arc::new(calls::PipelineCaller {
                    pipeline: self.clone(),
                    // Its calls and tasks are asked from this execution's span.
                    actor: Actor {
                        trace: Some(trace.clone()),
                        ..run.actor.clone()
                    },
                    tenant: run.tenant.clone(),
                    chain: chain.clone(),
                    correlation_id: run.correlation_id.clone(),
                }) as Arc<dyn AgentCaller>
            }),
            kv: grants.kv.as_ref().map(|_| {
                Arc::new(DbKvStore::new(
                    self.db.clone(),
                    &agent.tenant_id,
                    &agent.id,
                    self.quotas.clock().clone(),
                )) as Arc<dyn KvStore>
            }),
            config: Some(Arc::new(DbConfigSource::new(
                self.db.clone(),
                &agent.tenant_id,
                &agent.id,
                self.settings.secrets_key.clone(),
            ))),
        }
    }

    /// Appends an audit event that goes with no other write — a denial — in the next
    /// group commit, and waits for it to be durable. Failing to record it is logged,
    /// not returned: the request is refused either way.
    pub async fn audit_alone(&self, event: AuditEvent) {
        if let Err(e) = self.writer.audit(vec![event]).await {
            tracing::error!(error = %e, "could not record an audit event");
        }
    }
}

/// The span of one execution, under `caller` (the request's span, or the calling
/// execution's) when traces are exported, else under the span it was asked from.
fn execution_span(caller: &tracing::Span, run: &Invocation) -> tracing::Span {
    let span = tracing::info_span!(
        parent: caller,
        "execution",
        otel.name = %format!("execute {}", run.agent.name),
        execution.id = tracing::field::Empty,
        agent = %run.agent.name,
        agent.version = tracing::field::Empty,
        action = %run.action,
        tenant.id = %run.tenant.id,
        outcome = tracing::field::Empty,
        usage.fuel = tracing::field::Empty,
        usage.peak_memory_bytes = tracing::field::Empty,
        usage.wall_time_us = tracing::field::Empty,
        usage.model_tokens = tracing::field::Empty,
        cost.picodollars = tracing::field::Empty,
    );
    // A task's run has no request around it: it continues the trace it was submitted
    // in. (Set before the span is entered, as the parent must be.)
    let caller_exported = caller.context().span().span_context().is_valid();
    if !caller_exported && let Some(parent) = &run.actor.trace {
        let _ = span.set_parent(crate::telemetry::context::remote(parent));
    }
    span
}

/// Records how an execution ended on its span.
fn record_end(span: &tracing::Span, execution: &crate::runtime::Execution, cost: i64) {
    let usage = &execution.usage;
    span.record("outcome", execution.outcome.as_str());
    span.record("usage.fuel", usage.fuel);
    span.record("usage.peak_memory_bytes", usage.peak_memory_bytes);
    span.record("usage.wall_time_us", usage.wall_time.as_micros() as u64);
    span.record(
        "usage.model_tokens",
        usage.llm.input_tokens + usage.llm.output_tokens,
    );
    span.record("cost.picodollars", cost);
}

fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT_BYTES {
        return text.to_string();
    }
    let mut end = EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The token rate quotas of one run (`quotas.tokens_per_minute` of its agent and tenant),
/// over the enforcer's buckets (shared by every host on Postgres).
struct TokenRates {
    quotas: Arc<Enforcer>,
    tenant_id: String,
    scopes: Vec<(String, u64)>,
}

#[async_trait::async_trait]
impl TokenMeter for TokenRates {
    async fn take(&self, want: u64, least: u64) -> Result<u64, TokenShortage> {
        self.quotas
            .take_tokens(&self.tenant_id, &self.scopes, want, least)
            .await
            .map_err(|wait| match wait {
                quota::TokenWait::For(wait) => TokenShortage::Wait(wait),
                quota::TokenWait::Unavailable(e) => TokenShortage::Unavailable(e),
            })
    }

    async fn give_back(&self, tokens: u64) {
        self.quotas
            .return_tokens(&self.tenant_id, &self.scopes, tokens)
            .await;
    }
}
