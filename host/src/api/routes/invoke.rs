//! `POST /v1/agents/{name}/invoke`: run an action in a fresh sandbox and answer only
//! once the execution record is committed.
//!
//! The response is `200` whenever the agent ran, whatever the outcome (the outcome is
//! in the body, and the execution is recorded); errors (4xx/5xx) mean it did not run.
//! With an `Idempotency-Key` header a retry returns the first response without running
//! or billing again, and reusing the key for a different request is `422
//! idempotency_key_reused`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::types::Json as DbJson;

use super::agents::find;
use crate::api::calls::ApiCaller;
use crate::api::extract::{ApiJson, ApiPath, Principal};
use crate::api::{ApiError, AppState};
use crate::costs::format_dollars;
use crate::db::agents::{self, Agent};
use crate::db::config::DbConfigSource;
use crate::db::executions::ExecutionRecord;
use crate::db::idempotency::{self, Reservation};
use crate::db::keys::Role;
use crate::db::tenants::Tenant;
use crate::db::usage;
use crate::db::writer::{KeyCompletion, WriteError};
use crate::db::{self, DbError};
use crate::limits::Limits;
use crate::policy::LimitOverrides;
use crate::quota::{self, Admission, AdmitError, AdmitRequest, Scope};
use crate::runtime::capabilities::agents::{AgentCaller, CallChain, Rollup};
use crate::runtime::{
    Denial, ExecutionError, InvokeRequest, LoadedAgent, Outcome, Providers, Usage,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/agents/{name}/invoke", post(invoke))
}

/// Bytes of input and output kept in the execution record.
const EXCERPT_BYTES: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    action: String,
    #[serde(default = "empty_object")]
    input: Value,
    /// Run this version (id or semver) instead of the active one.
    version: Option<String>,
    correlation_id: Option<String>,
    /// Per-call limits; each may only tighten the agent's.
    #[serde(default)]
    limits: LimitOverrides,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The response of a completed invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvokeResponse {
    execution_id: String,
    agent: String,
    version: String,
    action: String,
    outcome: String,
    output: Option<Value>,
    error: Option<ExecutionError>,
    usage: Usage,
    /// Capability requests refused during the run (absent when there were none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    denials: Vec<Denial>,
    /// Dollars, as an exact decimal string.
    cost: String,
    /// This execution's cost plus that of every execution it called, all the way down.
    total_cost: String,
    correlation_id: Option<String>,
    /// The execution that called this one (absent for a root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_execution_id: Option<String>,
    /// The root of this one's call tree (itself for a root).
    root_execution_id: String,
}

async fn invoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<InvokeBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let queued_at = state.quotas.clock().now();
    principal
        .require_on_agent(&state, Role::Developer, "agent.invoke", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    if agent.status == "paused" {
        principal
            .deny(&state, "agent.invoke", "agent", Some(&agent.id))
            .await;
        return Err(ApiError::conflict(
            "agent_paused",
            format!("agent {name:?} is paused; resume it to invoke it"),
        ));
    }

    let tenant = state.tenant(principal.tenant_id()).await?;
    let limits = tenant.policy.0.limits.tighten(state.settings.limits);
    let limits = agent.policy.0.limits.tighten(limits);
    body.limits
        .validate(&limits)
        .map_err(|m| ApiError::bad_request("invalid_limits", format!("{m} (the agent's limit)")))?;
    let limits = body.limits.tighten(limits);

    let idempotency_key = idempotency_key(&headers)?;
    if let Some(key) = &idempotency_key {
        let hash = request_hash(&name, &body);
        match idempotency::reserve(&state.db, principal.tenant_id(), key, &hash).await? {
            Reservation::Reserved => {}
            Reservation::Completed(response) => return Ok((StatusCode::OK, Json(response))),
            Reservation::InProgress => {
                return Err(ApiError::conflict(
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still running; retry later",
                ));
            }
            Reservation::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                ));
            }
        }
    }

    let run = Run {
        principal: principal.clone(),
        agent,
        tenant,
        action: body.action.clone(),
        input: body.input.to_string(),
        version: body.version.clone(),
        correlation_id: body.correlation_id.clone(),
        limits,
        queued_at,
        idempotency_key: idempotency_key.clone(),
        chain: None,
    };
    let result = execute(&state, run).await;
    if result.is_err()
        && let Some(key) = &idempotency_key
    {
        // Nothing ran or nothing was recorded: free the key for a retry.
        let _ = idempotency::release(&state.db, principal.tenant_id(), key).await;
    }
    result.map(|ran| (StatusCode::OK, Json(ran.response)))
}

/// One run of an agent: what to run, on whose behalf, and where in a call tree.
#[derive(Clone)]
pub struct Run {
    /// Who asked (for a call between agents: whoever invoked the root).
    pub principal: Principal,
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
    /// The effective limits (before quotas lower the fuel).
    pub limits: Limits,
    /// When the request arrived.
    pub queued_at: chrono::DateTime<chrono::Utc>,
    /// The request's idempotency key.
    pub idempotency_key: Option<String>,
    /// The chain of calls that led here; `None` for a root.
    pub chain: Option<CallChain>,
}

/// A run that happened and was recorded.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The response body.
    pub response: Value,
    /// How it ended, and its output or error.
    pub outcome: Outcome,
    /// The output, when it succeeded.
    pub output: Option<String>,
    /// The error, when it did not.
    pub error: Option<ExecutionError>,
    /// This execution and everything it called.
    pub rollup: Rollup,
}

/// Runs an agent — checks its version, quotas and limits, runs it in a fresh sandbox,
/// records the execution (with its capability denials as audit events) — and returns
/// once the record is committed.
pub async fn execute(state: &AppState, run: Run) -> Result<Ran, ApiError> {
    let (principal, agent, tenant) = (&run.principal, &run.agent, &run.tenant);
    let mut limits = run.limits;
    let version_ref = match (&run.version, &agent.active_version_id) {
        (Some(v), _) => v.clone(),
        (None, Some(active)) => active.clone(),
        (None, None) => {
            return Err(ApiError::conflict(
                "no_active_version",
                format!(
                    "agent {:?} has no active version; upload one first",
                    agent.name
                ),
            ));
        }
    };
    let cache_key = (
        principal.tenant_id().to_string(),
        agent.id.clone(),
        version_ref.clone(),
    );
    let version = match state.versions.get(&cache_key) {
        Some(version) => version,
        None => {
            let version =
                agents::version(&state.db, principal.tenant_id(), &agent.id, &version_ref)
                    .await
                    .map_err(|e| match e {
                        DbError::NotFound => ApiError::not_found(format!(
                            "version {version_ref:?} of agent {:?}",
                            agent.name
                        )),
                        e => e.into(),
                    })?;
            state.versions.insert(cache_key, version.clone());
            version
        }
    };
    let loaded = load(state, principal.tenant_id(), &version.id).await?;

    // Quotas last, just before the guest runs: the lease covers the run and the commit.
    let admission = admit(state, principal, agent, tenant, limits.timeout).await?;
    if let Some(left) = admission.fuel_left {
        limits.fuel = limits.fuel.min(left);
    }

    let clock = state.quotas.clock();
    let execution_id = db::new_id();
    let chain = match &run.chain {
        Some(parent) => parent.child(&agent.name, &execution_id),
        None => CallChain::root(&agent.name, &execution_id),
    };
    let providers = Providers {
        agents: agent.policy.0.grants.agents.as_ref().map(|_| {
            Arc::new(ApiCaller {
                state: state.clone(),
                principal: principal.clone(),
                tenant: tenant.clone(),
                chain: chain.clone(),
                correlation_id: run.correlation_id.clone(),
            }) as Arc<dyn AgentCaller>
        }),
        kv: super::kv::store_for(state, agent),
        config: Some(Arc::new(DbConfigSource::new(
            state.db.clone(),
            principal.tenant_id(),
            &agent.id,
            state.settings.secrets_key.clone(),
        ))),
    };
    let started_at = clock.now();
    let request = InvokeRequest {
        action: run.action.clone(),
        input: run.input.clone(),
        limits,
        execution_id: Some(execution_id.clone()),
        correlation_id: run.correlation_id.clone(),
        agent_name: Some(agent.name.clone()),
        grants: agent.policy.0.grants.clone(),
        providers,
    };
    let execution = if run.chain.is_some() {
        state.runtime.invoke_nested(&loaded, request).await
    } else {
        state.runtime.invoke(&loaded, request).await
    }
    .map_err(ApiError::internal)?;
    let finished_at = clock.now();
    let cost = state.settings.prices.cost_picodollars(&execution.usage);
    let mut rollup = execution.usage.agents.subtree;
    rollup.add(Rollup {
        executions: 1,
        fuel: execution.usage.fuel,
        cost_picodollars: cost,
    });

    let output: Option<Value> = execution
        .output
        .as_deref()
        .map(|o| serde_json::from_str(o).unwrap_or(Value::Null));
    let response = InvokeResponse {
        execution_id: execution_id.clone(),
        agent: agent.name.clone(),
        version: version.version.clone(),
        action: execution.action.clone(),
        outcome: execution.outcome.as_str().into(),
        output,
        error: execution.error.clone(),
        usage: execution.usage,
        denials: execution.denials.clone(),
        cost: format_dollars(cost),
        total_cost: format_dollars(rollup.cost_picodollars),
        correlation_id: run.correlation_id.clone(),
        parent_execution_id: run.chain.as_ref().map(|c| c.execution_id.clone()),
        root_execution_id: chain.root_execution_id.clone(),
    };
    let response = serde_json::to_value(&response).expect("response serializes");

    // Every refused capability request is on the audit trail, committed with the record.
    let events = execution
        .denials
        .iter()
        .map(|denial| {
            let mut event = principal.event(
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
    let capabilities = serde_json::json!({
        "http": execution.usage.http,
        "kv": execution.usage.kv,
        "config": execution.usage.config,
        "agents": execution.usage.agents,
        "denials": execution.denials,
    });
    let record = ExecutionRecord {
        id: execution_id,
        tenant_id: principal.tenant_id().into(),
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
        actor_key_id: Some(principal.key.id.clone()),
        idempotency_key: run.idempotency_key.clone(),
        parent_execution_id: run.chain.as_ref().map(|c| c.execution_id.clone()),
        root_execution_id: Some(chain.root_execution_id.clone()),
        call_depth: (chain.agents.len() - 1) as i32,
        capabilities: DbJson(capabilities),
    };
    let completion = run.idempotency_key.as_ref().map(|key| KeyCompletion {
        key: key.clone(),
        response: response.clone(),
    });
    // Acknowledge only what is committed.
    state
        .writer
        .write(record, completion, events)
        .await
        .map_err(|e| match e {
            WriteError::Stopped => ApiError::unavailable("the server is shutting down"),
            WriteError::Db(e) => ApiError::internal(e),
        })?;
    // Only now, with the execution charged, may its slot go to another.
    admission.release().await;
    Ok(Ran {
        response,
        outcome: execution.outcome,
        output: execution.output,
        error: execution.error,
        rollup,
    })
}

/// Takes the invocation's place in its agent's and tenant's quotas, or records the
/// denial and refuses with `429` and `Retry-After`.
async fn admit(
    state: &AppState,
    principal: &Principal,
    agent: &Agent,
    tenant: &Tenant,
    timeout: std::time::Duration,
) -> Result<Admission, ApiError> {
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
    match state.quotas.admit(request).await {
        Ok(admission) => Ok(admission),
        Err(AdmitError::Db(e)) => Err(e.into()),
        Err(AdmitError::Denied(denial)) => {
            let mut event = principal.event("agent.invoke", "agent", Some(&agent.id));
            event.result = "denied".into();
            // On the quota clock, so usage reports count it in the period it refused.
            event.occurred_at = state.quotas.clock().now();
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
            state.audit_alone(event).await;
            Err(ApiError::quota(&denial))
        }
    }
}

/// The loaded agent for a version: from the in-process map, or from the database's
/// component bytes (the runtime's caches make that a hash and a lookup, not a compile,
/// after the first time on this host).
async fn load(
    state: &AppState,
    tenant_id: &str,
    version_id: &str,
) -> Result<Arc<LoadedAgent>, ApiError> {
    if let Some(agent) = state.loaded.lock().expect("loaded lock").get(version_id) {
        return Ok(agent.clone());
    }
    let bytes = agents::component(&state.db, tenant_id, version_id).await?;
    let loaded = state
        .runtime
        .load(bytes)
        .await
        .map_err(ApiError::internal)?;
    state
        .loaded
        .lock()
        .expect("loaded lock")
        .insert(version_id.into(), loaded.clone());
    Ok(loaded)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

fn request_hash(agent: &str, body: &InvokeBody) -> String {
    let canonical = serde_json::to_string(&(agent, body)).expect("body serializes");
    hex::encode(Sha256::digest(canonical.as_bytes()))
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
