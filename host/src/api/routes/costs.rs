//! `GET /v1/costs`: cost aggregated by agent and by day, week or month, and model spend
//! by model alias.

use axum::Json;
use axum::extract::State;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::parse_time;
use crate::api::error::{ErrorCode, responses};
use crate::api::extract::{ApiQuery, Principal};
use crate::api::{ApiError, AppState};
use crate::costs::format_dollars;
use crate::db::executions::{self, Period};
use crate::db::keys::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(costs))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct CostQuery {
    /// Bucket size: `day` (default), `week` or `month`.
    #[param(pattern = "^(day|week|month)$")]
    period: Option<String>,
    /// Start (inclusive), RFC 3339. Default: 30 days before `until`.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// End (exclusive), RFC 3339. Default: now. Must be after `since`.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct CostBucket {
    /// The agent's name.
    agent: String,
    /// The UTC day, the Monday of the ISO week, or the first day of the month.
    period_start: String,
    /// Executions in the bucket.
    executions: i64,
    /// Fuel consumed.
    fuel: i64,
    /// Wall time, in microseconds.
    wall_time_us: i64,
    /// US dollars as an exact decimal string with 12 places, e.g. `0.000000116451`.
    cost: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct CostReport {
    period: &'static str,
    since: chrono::DateTime<Utc>,
    until: chrono::DateTime<Utc>,
    /// US dollars as an exact decimal string with 12 places, e.g. `0.000000116451`.
    total_cost: String,
    /// Executions in the range.
    total_executions: i64,
    /// By period start, then agent name.
    buckets: Vec<CostBucket>,
    /// Model calls in the range, by alias (their cost is part of the buckets' costs).
    models: Vec<ModelBucket>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ModelBucket {
    model: String,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost: String,
}

/// Cost report
///
/// **Role:** viewer.
///
/// Cost of the caller's tenant's executions (by `finished_at`) summed by agent and UTC
/// day, ISO week (from Monday) or calendar month.
#[utoipa::path(
    get,
    path = "/costs",
    operation_id = "getCosts",
    tag = "costs",
    params(
        CostQuery,
    ),
    responses(
        (status = 200, description = "The report.", body = CostReport),
        (status = 400, response = responses::InvalidQuery),
    )
)]
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
                ErrorCode::InvalidQuery,
                format!("period must be day, week or month, not {other:?}"),
            ));
        }
    };
    let until = parse_time("until", q.until.as_deref())?.unwrap_or_else(Utc::now);
    let since = parse_time("since", q.since.as_deref())?.unwrap_or(until - Duration::days(30));
    if since >= until {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
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
