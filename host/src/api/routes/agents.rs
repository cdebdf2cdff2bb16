//! Agents: create, list, get, update policy, pause, resume, delete (with the agent's
//! config values and secrets).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::{ErrorBody, ErrorCode, responses};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::agents::{self, Agent, AgentChange};
use crate::db::keys::Role;
use crate::db::{self, DbError, audit, config, tenants};
use crate::policy::AgentPolicy;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, remove))
        .routes(routes!(update_policy))
        .routes(routes!(pause))
        .routes(routes!(resume))
}

/// An agent as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Agent)]
pub struct AgentView {
    /// The agent's id (UUIDv7).
    id: String,
    name: String,
    description: String,
    /// A paused agent refuses invocations with `409 agent_paused`.
    status: String,
    policy: AgentPolicy,
    /// The version invocations run by default; null until a version is uploaded.
    active_version_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        AgentView {
            id: a.id.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            status: a.status.clone(),
            policy: a.policy.0.clone(),
            active_version_id: a.active_version_id.clone(),
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

fn snapshot(agent: &Agent) -> Option<DbJson<serde_json::Value>> {
    Some(DbJson(
        serde_json::to_value(AgentView::from(agent)).expect("agent serializes"),
    ))
}

/// Finds a live agent of the caller's tenant, or 404 (also for other tenants' agents).
pub async fn find(state: &AppState, principal: &Principal, name: &str) -> Result<Agent, ApiError> {
    let cache_key = (principal.tenant_id().to_string(), name.to_string());
    if let Some(agent) = state.agents.get(&cache_key) {
        return Ok(agent);
    }
    let agent = agents::by_name(&state.db, principal.tenant_id(), name)
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(format!("agent {name:?}")),
            e => e.into(),
        })?;
    state.agents.insert(cache_key, agent.clone());
    Ok(agent)
}

/// Records a refusal by a plan cap and answers `409 plan_limit_reached`.
pub async fn plan_limit(
    state: &AppState,
    principal: &Principal,
    action: &str,
    cap: &str,
    max: u64,
) -> ApiError {
    let mut event = principal.event(action, "tenant", Some(principal.tenant_id()));
    event.result = "denied".into();
    event.after = Some(DbJson(
        serde_json::json!({ "code": ErrorCode::PlanLimitReached, "cap": cap, "max": max }),
    ));
    state.audit_alone(event).await;
    ApiError::conflict(
        ErrorCode::PlanLimitReached,
        format!("the tenant's plan allows {cap} = {max}, and this would exceed it"),
    )
}

/// Drops the cached copy of an agent after changing it.
pub fn forget(state: &AppState, principal: &Principal, name: &str) {
    state
        .agents
        .remove(&(principal.tenant_id().to_string(), name.to_string()));
}

/// A new agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAgent {
    /// 1 to 64 characters: lowercase letters, digits, `-` and `_`, starting with a
    /// letter. Unique among the tenant's live agents.
    name: String,
    #[serde(default)]
    description: String,
    /// Limits and quotas. Setting a policy needs the `admin` role. Default: no limits
    /// beyond the host's and the tenant's.
    policy: Option<AgentPolicy>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if crate::policy::is_agent_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            ErrorCode::InvalidName,
            "an agent name is 1 to 64 characters: lowercase letters, digits, '-' and '_', starting with a letter",
        ))
    }
}

/// Create an agent
///
/// **Role:** developer (admin to set `policy`).
///
/// Creates an agent with no versions; upload one with `POST
/// /v1/agents/{name}/versions`. If the tenant's plan caps live agents
/// (`caps.max_agents`) and it has that many, the agent is not created: `409
/// plan_limit_reached`, recorded in the audit trail as a denial.
#[utoipa::path(
    post,
    path = "/agents",
    operation_id = "createAgent",
    tag = "agents",
    request_body(content = CreateAgent, content_type = "application/json", description = "The agent."),
    responses(
        (status = 201, description = "The new agent.", body = AgentView),
        (status = 400, description = "The request body is invalid. Codes: `invalid_json`, `invalid_name`, `invalid_policy`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 409, description = "A live agent of this name exists in the tenant (`agent_exists`), or the tenant's plan allows no more live agents (`plan_limit_reached`; the message names the cap). Codes: `agent_exists`, `plan_limit_reached`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    principal
        .require(
            &state,
            Role::Developer,
            "agent.create",
            "agent",
            Some(&body.name),
        )
        .await?;
    if body.policy.is_some() {
        principal
            .require(
                &state,
                Role::Admin,
                "agent.create",
                "agent",
                Some(&body.name),
            )
            .await?;
    }
    check_name(&body.name)?;
    let policy = body.policy.unwrap_or_default();
    validate_policy(&state, &policy)?;
    let now = db::now();
    let agent = Agent {
        id: db::new_id(),
        tenant_id: principal.tenant_id().into(),
        name: body.name,
        description: body.description,
        status: "active".into(),
        policy: DbJson(policy),
        active_version_id: None,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    let mut event = principal.event("agent.create", "agent", Some(&agent.id));
    event.after = snapshot(&agent);
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    let tenant = tenants::lock(&mut tx, principal.tenant_id()).await?;
    if let Some(max) = tenant.policy.0.caps.max_agents
        && agents::count_live(&mut tx, &tenant.id).await? >= max as i64
    {
        drop(tx);
        return Err(plan_limit(&state, &principal, "agent.create", "max_agents", max).await);
    }
    agents::insert(&mut tx, &agent).await.map_err(|e| match e {
        DbError::Conflict(m) => ApiError::conflict(ErrorCode::AgentExists, m),
        e => e.into(),
    })?;
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(AgentView::from(&agent))))
}

/// List agents
///
/// **Role:** viewer.
///
/// The caller's tenant's live agents, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/agents",
    operation_id = "listAgents",
    tag = "agents",
    params(
        Page,
    ),
    responses(
        (status = 200, description = "A page of agents.", body = Paged<AgentView>),
        (status = 400, response = responses::InvalidQuery),
    )
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Paged<AgentView>>, ApiError> {
    principal
        .require(&state, Role::Viewer, "agent.list", "agent", None)
        .await?;
    let limit = page.limit()?;
    let rows = agents::list(
        &state.db,
        principal.tenant_id(),
        page.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let page = Paged::from_rows(rows, limit, |a| a.id.clone());
    Ok(Json(Paged {
        items: page.items.iter().map(AgentView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get an agent
///
/// **Role:** viewer.
///
/// One agent of the caller's tenant.
#[utoipa::path(
    get,
    path = "/agents/{name}",
    operation_id = "getAgent",
    tag = "agents",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    responses(
        (status = 200, description = "The agent.", body = AgentView),
        (status = 400, response = responses::InvalidPath),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    principal
        .require_on_agent(&state, Role::Viewer, "agent.get", &name)
        .await?;
    Ok(Json(AgentView::from(
        &find(&state, &principal, &name).await?,
    )))
}

/// Applies `change` to an agent, writing the change and its audit event together.
async fn change(
    state: &AppState,
    principal: &Principal,
    name: &str,
    action: &str,
    change: AgentChange<'_>,
) -> Result<Json<AgentView>, ApiError> {
    let mut agent = find(state, principal, name).await?;
    let mut event = principal.event(action, "agent", Some(&agent.id));
    event.before = snapshot(&agent);
    match change {
        AgentChange::Status(status) => agent.status = status.into(),
        AgentChange::Policy(policy) => agent.policy = policy.clone(),
        AgentChange::ActiveVersion(id) => agent.active_version_id = Some(id.into()),
    }
    agent.updated_at = db::now();
    event.after = snapshot(&agent);
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    agents::update(&mut tx, principal.tenant_id(), &agent.id, change).await?;
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    forget(state, principal, name);
    Ok(Json(AgentView::from(&agent)))
}

/// Replace an agent's policy
///
/// **Role:** admin.
///
/// Replaces the policy: limits and quotas (a field left out is unset). Limits may only
/// tighten the host's (`CORRAL_FUEL`, `CORRAL_MEMORY`, `CORRAL_TIMEOUT`,
/// `CORRAL_MAX_OUTPUT`, `CORRAL_MAX_LOGS`); quotas apply to this agent's invocations,
/// on top of its tenant's. The change is recorded in the audit trail
/// (`agent.update_policy`).
#[utoipa::path(
    put,
    path = "/agents/{name}/policy",
    operation_id = "updateAgentPolicy",
    tag = "agents",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    request_body(content = AgentPolicy, content_type = "application/json", description = "The new policy."),
    responses(
        (status = 200, description = "The agent with its new policy.", body = AgentView),
        (status = 400, description = "The path or body is invalid: not UTF-8 (`invalid_path`); not JSON, an unknown field or a wrong type (`invalid_json`); a value that is zero or above its ceiling (`invalid_policy`). Codes: `invalid_path`, `invalid_json`, `invalid_policy`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn update_policy(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(policy): ApiJson<AgentPolicy>,
) -> Result<Json<AgentView>, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.update_policy", &name)
        .await?;
    validate_policy(&state, &policy)?;
    let policy = DbJson(policy);
    change(
        &state,
        &principal,
        &name,
        "agent.update_policy",
        AgentChange::Policy(&policy),
    )
    .await
}

/// Pause an agent
///
/// **Role:** developer.
///
/// Pauses the agent: invocations are refused with `409 agent_paused` (and recorded as
/// denials) until it is resumed; its tasks wait, and none is started, until then.
/// Pausing a paused agent changes nothing but `updated_at`.
#[utoipa::path(
    post,
    path = "/agents/{name}/pause",
    operation_id = "pauseAgent",
    tag = "agents",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    responses(
        (status = 200, description = "The paused agent.", body = AgentView),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    principal
        .require_on_agent(&state, Role::Developer, "agent.pause", &name)
        .await?;
    change(
        &state,
        &principal,
        &name,
        "agent.pause",
        AgentChange::Status("paused"),
    )
    .await
}

/// Resume an agent
///
/// **Role:** developer.
///
/// Makes a paused agent invocable again.
#[utoipa::path(
    post,
    path = "/agents/{name}/resume",
    operation_id = "resumeAgent",
    tag = "agents",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    responses(
        (status = 200, description = "The active agent.", body = AgentView),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AgentView>, ApiError> {
    principal
        .require_on_agent(&state, Role::Developer, "agent.resume", &name)
        .await?;
    change(
        &state,
        &principal,
        &name,
        "agent.resume",
        AgentChange::Status("active"),
    )
    .await
}

/// Delete an agent
///
/// **Role:** admin.
///
/// Deletes the agent (softly: its executions and audit events stay, and the name
/// becomes free).
#[utoipa::path(
    delete,
    path = "/agents/{name}",
    operation_id = "deleteAgent",
    tag = "agents",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.delete", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let mut event = principal.event("agent.delete", "agent", Some(&agent.id));
    event.before = snapshot(&agent);
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    agents::delete(&mut tx, principal.tenant_id(), &agent.id).await?;
    config::delete_all(&mut tx, principal.tenant_id(), &agent.id).await?;
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    forget(&state, &principal, &name);
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a policy the host cannot honour: bad limits or grants, and model aliases
/// this host has not configured (and priced).
fn validate_policy(state: &AppState, policy: &AgentPolicy) -> Result<(), ApiError> {
    policy
        .validate(&state.settings.limits)
        .map_err(|m| ApiError::bad_request(ErrorCode::InvalidPolicy, m))?;
    if let Some(grant) = &policy.grants.llm {
        let configured = |alias: &str| {
            state
                .settings
                .llm
                .as_ref()
                .is_some_and(|catalogue| catalogue.model(alias).is_some())
        };
        if let Some(unknown) = grant.models.iter().find(|m| !configured(m)) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidPolicy,
                format!(
                    "grants.llm.models: no model {unknown:?} is configured on this host (CORRAL_LLM_CONFIG)"
                ),
            ));
        }
    }
    Ok(())
}
