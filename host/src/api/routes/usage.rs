//! Quotas as their owners see them: tenant policies (`GET`/`PUT
//! /v1/tenants/{id}/policy`) and current-period consumption against every limit
//! (`GET /v1/agents/{name}/usage`, `GET /v1/tenants/{id}/usage`).
//!
//! A tenant's members read their own tenant; admins of the operator tenant read and
//! set any tenant's policy.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::types::Json as DbJson;

use super::agents::find;
use crate::api::extract::{ApiId, ApiJson, ApiPath, Principal};
use crate::api::{ApiError, AppState};
use crate::costs::format_dollars;
use crate::db::keys::Role;
use crate::db::tenants::{self, Tenant};
use crate::db::usage::{self, Consumption, Totals};
use crate::db::{DbError, agents, audit};
use crate::policy::{Quotas, TenantPolicy};
use crate::quota::{self, LiveState, Period, Scope};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents/{name}/usage", get(agent_usage))
        .route("/tenants/{id}/usage", get(tenant_usage))
        .route(
            "/tenants/{id}/policy",
            get(tenant_policy).put(set_tenant_policy),
        )
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

async fn tenant_policy(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<TenantPolicy>, ApiError> {
    let tenant = require_tenant(&state, &principal, &id, Role::Viewer, "tenant.get_policy").await?;
    Ok(Json(tenant.policy.0))
}

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

/// One scope's consumption against its quotas.
#[derive(Debug, Serialize)]
struct ScopeUsage {
    /// `agent:<id>` or `tenant:<id>`.
    scope: String,
    /// The scope's quotas.
    quotas: Quotas,
    /// Use today and this month (UTC).
    used: Periods<UsedView>,
    /// Each budget set: its limit, use and what is left.
    budgets: Vec<Value>,
    /// Invocations running now, and the quota.
    concurrency: Value,
    /// Tokens in the bucket now, if rate-limited.
    rate: Value,
    /// Quota denials today and this month, by code.
    denials: Periods<Value>,
}

#[derive(Debug, Serialize)]
struct Periods<T> {
    day: T,
    month: T,
}

#[derive(Debug, Serialize)]
struct UsedView {
    invocations: i64,
    fuel: i64,
    dollars: String,
    /// Model tokens, input and output.
    tokens: i64,
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
                quota::BudgetUnit::Dollars => json!(format_dollars(v)),
                quota::BudgetUnit::Fuel | quota::BudgetUnit::Tokens => json!(v),
            };
            json!({
                "budget": b.name,
                "limit": show(b.limit),
                "used": show(b.used),
                "remaining": show((b.limit - b.used).max(0)),
                "exhausted": b.used >= b.limit,
                "resets_at": quota::next_period_start(b.period, now),
            })
        })
        .collect();
    let LiveState { in_flight, tokens } = state.quotas.live(tenant_id, &scope).await?;
    let day_start = quota::next_period_start(Period::Day, now) - chrono::Duration::days(1);
    let month_start = chrono::NaiveDate::parse_from_str(&usage::month_start_of(now), "%Y-%m-%d")
        .expect("a date we formatted")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let denials = |rows: Vec<(String, i64)>| {
        Value::Object(rows.into_iter().map(|(code, n)| (code, json!(n))).collect())
    };
    Ok(ScopeUsage {
        scope: scope.key.into(),
        quotas: scope.quotas.clone(),
        used: Periods {
            day: used.day.into(),
            month: used.month.into(),
        },
        budgets,
        concurrency: json!({ "in_flight": in_flight, "limit": scope.quotas.max_concurrency }),
        rate: match (scope.quotas.rate, tokens) {
            (Some(rate), Some(tokens)) => json!({
                "requests": rate.requests, "per": rate.per, "burst": rate.burst(),
                "tokens_available": (tokens * 1000.0).floor() / 1000.0,
            }),
            _ => Value::Null,
        },
        denials: Periods {
            day: denials(audit::count_denials(&state.db, tenant_id, agent_id, day_start).await?),
            month: denials(
                audit::count_denials(&state.db, tenant_id, agent_id, month_start).await?,
            ),
        },
    })
}

async fn agent_usage(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "agent": agent.name,
        "as_of": state.quotas.clock().now(),
        "limits": limits,
        "usage": own,
        "tenant": shared,
    })))
}

async fn tenant_usage(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "tenant_id": tenant.id,
        "as_of": state.quotas.clock().now(),
        "limits": tenant.policy.0.limits.tighten(state.settings.limits),
        "usage": shared,
        "caps": {
            "agents": { "used": live_agents, "limit": caps.max_agents },
            "versions": { "used": versions, "limit": caps.max_versions },
            "total_component_bytes": { "used": bytes, "limit": caps.max_total_component_bytes },
            "max_component_bytes": caps.max_component_bytes
                .unwrap_or(state.settings.max_upload_bytes as u64),
        },
    })))
}
