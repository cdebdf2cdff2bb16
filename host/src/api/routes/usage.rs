//! Quotas as their owners see them: tenant policies (`GET`/`PUT
//! /v1/tenants/{id}/policy`) and current-period consumption against every limit
//! (`GET /v1/agents/{name}/usage`, `GET /v1/tenants/{id}/usage`).
//!
//! A tenant's members read their own tenant; admins of the operator tenant read and
//! set any tenant's policy.

use axum::Json;
use axum::extract::State;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::find;
use crate::api::error::{ErrorBody, responses};
use crate::api::extract::{ApiId, ApiJson, ApiPath, Principal};
use crate::api::{ApiError, AppState};
use crate::costs::format_dollars;
use crate::db::keys::Role;
use crate::db::tenants::{self, Tenant};
use crate::db::usage::{self, Consumption, Totals};
use crate::db::{DbError, agents, audit};
use crate::limits::Limits;
use crate::policy::{Quotas, RatePeriod, TenantPolicy};
use crate::quota::{self, LiveState, Period, Scope};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_usage))
        .routes(routes!(tenant_usage))
        .routes(routes!(tenant_policy, set_tenant_policy))
}

/// Lets a tenant's own keys (with `role`) and operator admins at tenant `id`.
async fn require_tenant(
    state: &AppState,
    principal: &Principal,
    id: &str,
    role: Role,
    action: &str,
) -> Result<Tenant, ApiError> {
    if principal.tenant_id() == id {
        principal
            .require(state, role, action, "tenant", Some(id))
            .await?;
    } else {
        principal
            .require(state, Role::Admin, action, "tenant", Some(id))
            .await?;
        if !principal.is_operator {
            principal.deny(state, action, "tenant", Some(id)).await;
            // Another tenant's id is not found, not forbidden: existence stays hidden.
            return Err(ApiError::not_found(format!("tenant {id:?}")));
        }
    }
    tenants::get(&state.db, id).await.map_err(|e| match e {
        DbError::NotFound => ApiError::not_found(format!("tenant {id:?}")),
        e => e.into(),
    })
}

/// Get a tenant's policy
///
/// **Role:** viewer of this tenant, or admin of the operator tenant for any tenant.
///
/// The tenant's limits, quotas and plan caps. A key of another tenant that is not an
/// operator admin gets `403` below `admin`, else `404`.
#[utoipa::path(
    get,
    path = "/tenants/{id}/policy",
    operation_id = "getTenantPolicy",
    tag = "tenants",
    params(
        ("id" = String, Path, description = "The tenant's id. A tenant's own keys may name only it; operator admins may name any tenant."),
    ),
    responses(
        (status = 200, description = "The policy.", body = TenantPolicy),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::TenantNotFound),
    )
)]
async fn tenant_policy(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<TenantPolicy>, ApiError> {
    let tenant = require_tenant(&state, &principal, &id, Role::Viewer, "tenant.get_policy").await?;
    Ok(Json(tenant.policy.0))
}

/// Replace a tenant's policy
///
/// **Role:** admin of the operator tenant (a tenant's own admins may read its policy,
/// not set it).
///
/// Replaces the policy (a field left out is unset): `limits` tighten every agent's,
/// `quotas` hold for all the tenant's agents together, `caps` bound what it stores.
/// Caps apply to later creates and uploads; what is already stored stays. The change is
/// recorded in the tenant's audit trail (`tenant.update_policy`, with the policy before
/// and after).
#[utoipa::path(
    put,
    path = "/tenants/{id}/policy",
    operation_id = "updateTenantPolicy",
    tag = "tenants",
    params(
        ("id" = String, Path, description = "The tenant's id. A tenant's own keys may name only it; operator admins may name any tenant."),
    ),
    request_body(content = TenantPolicy, content_type = "application/json", description = "The new policy."),
    responses(
        (status = 200, description = "The policy as stored.", body = TenantPolicy),
        (status = 400, description = "The path or body is invalid: not UTF-8 (`invalid_path`); not JSON, an unknown field or a wrong type (`invalid_json`); a value that is zero or above its ceiling (`invalid_policy`). Codes: `invalid_path`, `invalid_json`, `invalid_policy`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No tenant with this id. Codes: `not_found`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn set_tenant_policy(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
    ApiJson(policy): ApiJson<TenantPolicy>,
) -> Result<Json<TenantPolicy>, ApiError> {
    super::tenants::require_operator(&state, &principal, "tenant.update_policy").await?;
    super::tenants::validate(&state, &policy)?;
    let mut tx = state.db.begin(id.as_str()).await?;
    let before = tenants::lock(&mut tx, &id).await.map_err(|e| match e {
        DbError::NotFound => ApiError::not_found(format!("tenant {id:?}")),
        e => e.into(),
    })?;
    let policy = DbJson(policy);
    tenants::set_policy(&mut tx, &id, &policy).await?;
    let mut event = principal.event("tenant.update_policy", "tenant", Some(&id));
    event.before = Some(DbJson(json!({ "policy": before.policy.0 })));
    event.after = Some(DbJson(json!({ "policy": policy.0 })));
    // The audit event belongs to the tenant whose policy changed.
    event.tenant_id = id.clone();
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    state.tenants.remove(&id);
    Ok(Json(policy.0))
}

/// One scope's use in the current UTC day and month, against its quotas.
#[derive(Debug, Serialize, ToSchema)]
struct ScopeUsage {
    /// `agent:<agent id>` or `tenant:<tenant id>`.
    scope: String,
    /// The scope's quotas.
    quotas: Quotas,
    /// Use today and this month (UTC).
    used: Periods<UsedView>,
    /// Each budget set, with its use; empty if none is set.
    budgets: Vec<BudgetStatus>,
    /// Invocations running now, and the quota.
    concurrency: ConcurrencyStatus,
    /// The token bucket now; null without a rate quota.
    rate: Option<RateStatus>,
    /// Quota refusals since the start of the UTC day and month, from the audit trail,
    /// by error code (`rate_limited`, `concurrency_limited`, `budget_exhausted`; codes
    /// with no refusal are absent): for an agent's scope, refusals of its invocations
    /// (by its own quotas or its tenant's); for a tenant's, of all its agents'.
    denials: Periods<BTreeMap<String, i64>>,
}

/// A value today and this month (UTC).
#[derive(Debug, Serialize, ToSchema)]
struct Periods<T> {
    day: T,
    month: T,
}

/// What a scope's executions used in one period, as charged with their records.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = UsedTotals)]
struct UsedView {
    /// Executions recorded (refused invocations are not).
    invocations: i64,
    /// Fuel units consumed.
    fuel: i64,
    /// US dollars as an exact decimal string with 12 places, e.g. `0.000000116451`.
    dollars: String,
    /// Model tokens, input and output.
    tokens: i64,
}

/// One budget the scope sets, against what it used this period. Fuel and token
/// budgets give `limit`, `used` and `remaining` as integers; dollar budgets as dollar
/// strings with 12 places.
#[derive(Debug, Serialize, ToSchema)]
struct BudgetStatus {
    /// Which budget (`fuel_per_day`, `dollars_per_month`, …); only those set.
    budget: &'static str,
    /// The budget.
    limit: Amount,
    /// Used this period. May pass `limit` by what invocations already running when it
    /// ran out went on to use.
    used: Amount,
    /// `limit − used`, never below zero.
    remaining: Amount,
    /// Whether `used` has reached `limit`: invocations are refused with `429
    /// budget_exhausted` until `resets_at`.
    exhausted: bool,
    /// When the period rolls over: the next UTC midnight, or the first of the next
    /// month.
    resets_at: DateTime<Utc>,
}

/// Fuel units or tokens, or US dollars as an exact decimal string with 12 places.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum Amount {
    Units(i64),
    Dollars(String),
}

/// Invocations holding a slot now, against `max_concurrency`.
#[derive(Debug, Serialize, ToSchema)]
struct ConcurrencyStatus {
    /// Invocations holding a slot now (running, or committing their record).
    in_flight: u64,
    /// `max_concurrency`, or null if unset.
    limit: Option<u32>,
}

/// A rate quota's token bucket now.
#[derive(Debug, Serialize, ToSchema)]
struct RateStatus {
    /// Invocations allowed per `per`.
    requests: u64,
    per: RatePeriod,
    /// The bucket's size (the quota's `burst`, or `requests`).
    burst: u64,
    /// Tokens in the bucket now, rounded down to 3 decimals: an invocation needs 1.
    tokens_available: f64,
}

/// An agent's use against its quotas and its tenant's.
#[derive(Debug, Serialize, ToSchema)]
struct AgentUsage {
    /// The agent's name.
    agent: String,
    /// When the report was made; periods are the UTC day and month of this time.
    as_of: DateTime<Utc>,
    /// The per-invocation limits in effect: the host's, tightened by the tenant's policy
    /// and the agent's. A call may tighten them further.
    limits: Limits,
    usage: ScopeUsage,
    /// The agent's tenant: all its agents together.
    tenant: ScopeUsage,
}

/// A tenant's use against its quotas and plan caps.
#[derive(Debug, Serialize, ToSchema)]
struct TenantUsage {
    tenant_id: String,
    /// When the report was made; periods are the UTC day and month of this time.
    as_of: DateTime<Utc>,
    /// The per-invocation limits in effect: the host's, tightened by the tenant's
    /// policy. A call may tighten them further.
    limits: Limits,
    usage: ScopeUsage,
    /// What the tenant stores against its plan caps.
    caps: CapsUsage,
}

/// What a tenant stores against its plan caps.
#[derive(Debug, Serialize, ToSchema)]
struct CapsUsage {
    /// Live agents, against `max_agents`.
    agents: CapUsage,
    /// Stored versions of live agents, against `max_versions`.
    versions: CapUsage,
    /// Bytes of those versions, against `max_total_component_bytes`.
    total_component_bytes: CapUsage,
    /// The largest component an upload may be: `max_component_bytes` if set, else the
    /// host's `CORRAL_MAX_UPLOAD`.
    max_component_bytes: u64,
}

/// One plan cap.
#[derive(Debug, Serialize, ToSchema)]
struct CapUsage {
    /// Stored now.
    used: i64,
    /// The plan cap, or null if unset.
    limit: Option<u64>,
}

impl From<Totals> for UsedView {
    fn from(t: Totals) -> Self {
        UsedView {
            invocations: t.invocations,
            fuel: t.fuel,
            tokens: t.tokens,
            dollars: format_dollars(t.picodollars),
        }
    }
}

async fn scope_usage(
    state: &AppState,
    tenant_id: &str,
    agent_id: Option<&str>,
    scope: Scope<'_>,
) -> Result<ScopeUsage, ApiError> {
    let now = state.quotas.clock().now();
    let used: Consumption = usage::consumption(&state.db, tenant_id, &[scope.key.to_string()], now)
        .await?
        .remove(scope.key)
        .unwrap_or_default();
    let budgets = quota::budget_checks(scope.quotas, &used)
        .into_iter()
        .map(|b| {
            let show = |v: i64| match b.unit {
                quota::BudgetUnit::Dollars => Amount::Dollars(format_dollars(v)),
                quota::BudgetUnit::Fuel | quota::BudgetUnit::Tokens => Amount::Units(v),
            };
            BudgetStatus {
                budget: b.name,
                limit: show(b.limit),
                used: show(b.used),
                remaining: show((b.limit - b.used).max(0)),
                exhausted: b.used >= b.limit,
                resets_at: quota::next_period_start(b.period, now),
            }
        })
        .collect();
    let LiveState { in_flight, tokens } = state.quotas.live(tenant_id, &scope).await?;
    let day_start = quota::next_period_start(Period::Day, now) - chrono::Duration::days(1);
    let month_start = chrono::NaiveDate::parse_from_str(&usage::month_start_of(now), "%Y-%m-%d")
        .expect("a date we formatted")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let denials = |rows: Vec<(String, i64)>| rows.into_iter().collect::<BTreeMap<_, _>>();
    Ok(ScopeUsage {
        scope: scope.key.into(),
        quotas: scope.quotas.clone(),
        used: Periods {
            day: used.day.into(),
            month: used.month.into(),
        },
        budgets,
        concurrency: ConcurrencyStatus {
            in_flight,
            limit: scope.quotas.max_concurrency,
        },
        rate: match (scope.quotas.rate, tokens) {
            (Some(rate), Some(tokens)) => Some(RateStatus {
                requests: rate.requests,
                per: rate.per,
                burst: rate.burst(),
                tokens_available: (tokens * 1000.0).floor() / 1000.0,
            }),
            _ => None,
        },
        denials: Periods {
            day: denials(audit::count_denials(&state.db, tenant_id, agent_id, day_start).await?),
            month: denials(
                audit::count_denials(&state.db, tenant_id, agent_id, month_start).await?,
            ),
        },
    })
}

/// An agent's usage
///
/// **Role:** viewer.
///
/// The agent's use in the current UTC day and month against its quotas (`usage`) and
/// its tenant's (`tenant`, all its agents together): invocations, fuel and dollars
/// used, every budget with what is left and when it resets, invocations running now,
/// tokens in the rate bucket, quota refusals by code, and the per-invocation limits in
/// effect.
#[utoipa::path(
    get,
    path = "/agents/{name}/usage",
    operation_id = "getAgentUsage",
    tag = "usage",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    responses(
        (status = 200, description = "The report.", body = AgentUsage),
        (status = 400, response = responses::InvalidPath),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn agent_usage(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<AgentUsage>, ApiError> {
    principal
        .require_on_agent(&state, Role::Viewer, "agent.usage", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let tenant = state.tenant(principal.tenant_id()).await?;
    let agent_scope = usage::agent_scope(&agent.id);
    let tenant_scope = usage::tenant_scope(&tenant.id);
    let own = scope_usage(
        &state,
        &tenant.id,
        Some(&agent.id),
        Scope {
            key: &agent_scope,
            quotas: &agent.policy.0.quotas,
        },
    )
    .await?;
    let shared = scope_usage(
        &state,
        &tenant.id,
        None,
        Scope {
            key: &tenant_scope,
            quotas: &tenant.policy.0.quotas,
        },
    )
    .await?;
    let limits = agent
        .policy
        .0
        .limits
        .tighten(tenant.policy.0.limits.tighten(state.settings.limits));
    Ok(Json(AgentUsage {
        agent: agent.name,
        as_of: state.quotas.clock().now(),
        limits,
        usage: own,
        tenant: shared,
    }))
}

/// A tenant's usage
///
/// **Role:** viewer of this tenant, or admin of the operator tenant for any tenant.
///
/// The tenant's use in the current UTC day and month against its quotas (all its agents
/// together), the per-invocation limits in effect for its agents (before their own
/// policies), and what it stores against its plan caps. A key of another tenant that is
/// not an operator admin gets `403` below `admin`, else `404`.
#[utoipa::path(
    get,
    path = "/tenants/{id}/usage",
    operation_id = "getTenantUsage",
    tag = "usage",
    params(
        ("id" = String, Path, description = "The tenant's id. A tenant's own keys may name only it; operator admins may name any tenant."),
    ),
    responses(
        (status = 200, description = "The report.", body = TenantUsage),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::TenantNotFound),
    )
)]
async fn tenant_usage(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<TenantUsage>, ApiError> {
    let tenant = require_tenant(&state, &principal, &id, Role::Viewer, "tenant.usage").await?;
    let tenant_scope = usage::tenant_scope(&tenant.id);
    let shared = scope_usage(
        &state,
        &tenant.id,
        None,
        Scope {
            key: &tenant_scope,
            quotas: &tenant.policy.0.quotas,
        },
    )
    .await?;
    let caps = tenant.policy.0.caps;
    let mut tx = state.db.begin_read(tenant.id.as_str()).await?;
    let live_agents = agents::count_live(&mut tx, &tenant.id).await?;
    let (versions, bytes) = agents::stored(&mut tx, &tenant.id).await?;
    tx.commit().await?;
    Ok(Json(TenantUsage {
        tenant_id: tenant.id,
        as_of: state.quotas.clock().now(),
        limits: tenant.policy.0.limits.tighten(state.settings.limits),
        usage: shared,
        caps: CapsUsage {
            agents: CapUsage {
                used: live_agents,
                limit: caps.max_agents,
            },
            versions: CapUsage {
                used: versions,
                limit: caps.max_versions,
            },
            total_component_bytes: CapUsage {
                used: bytes,
                limit: caps.max_total_component_bytes,
            },
            max_component_bytes: caps
                .max_component_bytes
                .unwrap_or(state.settings.max_upload_bytes as u64),
        },
    }))
}
