//! `GET /v1/costs`: cost aggregated by agent and by day, week or month, and model spend
//! by model alias.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};

use super::parse_time;
use crate::api::extract::{ApiQuery, Principal};
use crate::api::{ApiError, AppState};
use crate::costs::format_dollars;
use crate::db::executions::{self, Period};
use crate::db::keys::Role;

pub fn router() -> Router<AppState> {
    Router::new().route("/costs", get(costs))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CostQuery {
    /// `day` (default), `week` or `month`.
    period: Option<String>,
    /// Start (inclusive), RFC 3339; default 30 days ago.
    since: Option<String>,
    /// End (exclusive), RFC 3339; default now.
    until: Option<String>,
}

#[derive(Debug, Serialize)]
struct CostBucket {
    agent: String,
    period_start: String,
    executions: i64,
    fuel: i64,
    wall_time_us: i64,
    cost: String,
}

#[derive(Debug, Serialize)]
struct CostReport {
    period: &'static str,
    since: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
    total_cost: String,
    total_executions: i64,
    buckets: Vec<CostBucket>,
    /// Model calls in the range, by alias (their cost is part of the buckets' costs).
    models: Vec<ModelBucket>,
}

#[derive(Debug, Serialize)]
struct ModelBucket {
    model: String,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost: String,
}

async fn costs(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<CostQuery>,
) -> Result<Json<CostReport>, ApiError> {
    principal
        .require(&state, Role::Viewer, "cost.list", "cost", None)
        .await?;
    let (period, name) = match q.period.as_deref().unwrap_or("day") {
        "day" => (Period::Day, "day"),
        "week" => (Period::Week, "week"),
        "month" => (Period::Month, "month"),
        other => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("period must be day, week or month, not {other:?}"),
            ));
        }
    };
    let until = parse_time("until", q.until.as_deref())?.unwrap_or_else(Utc::now);
    let since = parse_time("since", q.since.as_deref())?.unwrap_or(until - Duration::days(30));
    if since >= until {
        return Err(ApiError::bad_request(
            "invalid_query",
            "since must be before until",
        ));
    }
    let rows = executions::costs(&state.db, principal.tenant_id(), period, since, until).await?;
    let models =
        crate::db::llm_calls::costs_by_model(&state.db, principal.tenant_id(), since, until)
            .await?;
    let total: i64 = rows.iter().map(|r| r.cost_picodollars).sum();
    let executions: i64 = rows.iter().map(|r| r.executions).sum();
    Ok(Json(CostReport {
        period: name,
        since,
        until,
        total_cost: format_dollars(total),
        total_executions: executions,
        buckets: rows
            .into_iter()
            .map(|r| CostBucket {
                agent: r.agent_name,
                period_start: r.period_start,
                executions: r.executions,
                fuel: r.fuel,
                wall_time_us: r.wall_time_us,
                cost: format_dollars(r.cost_picodollars),
            })
            .collect(),
        models: models
            .into_iter()
            .map(|m| ModelBucket {
                cost: format_dollars(m.cost_picodollars),
                model: m.model,
                calls: m.calls,
                input_tokens: m.input_tokens,
                output_tokens: m.output_tokens,
            })
            .collect(),
    }))
}
