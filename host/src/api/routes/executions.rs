//! Executions: list with filters and cursor pagination; get one with its logs.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::parse_time;
use crate::api::error::{ErrorBody, responses};
use crate::api::extract::{ApiId, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::costs::format_dollars;
use crate::db::DbError;
use crate::db::executions::{self, ExecutionFilter, ExecutionRecord};
use crate::db::keys::Role;
use crate::runtime::{LogEntry, Outcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// An execution as the API shows it. Logs only appear on the single-execution view.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Execution)]
pub struct ExecutionView {
    /// The execution's id (UUIDv7).
    id: String,
    /// The agent's name at the time.
    agent: String,
    agent_id: String,
    version: String,
    version_id: String,
    action: String,
    outcome: String,
    error_code: Option<String>,
    error_message: Option<String>,
    /// Size of the input JSON.
    input_bytes: i64,
    /// The first 1 KiB of the input.
    input_excerpt: String,
    /// Size of the output.
    output_bytes: i64,
    /// The first 1 KiB of the output, if any.
    output_excerpt: Option<String>,
    /// Fuel consumed.
    fuel: i64,
    /// Peak linear memory.
    peak_memory_bytes: i64,
    /// Wall time, in microseconds.
    wall_time_us: i64,
    /// Bytes logged.
    log_bytes: i64,
    /// US dollars as an exact decimal string with 12 places, e.g. `0.000000116451`.
    cost: String,
    queued_at: chrono::DateTime<chrono::Utc>,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: chrono::DateTime<chrono::Utc>,
    correlation_id: Option<String>,
    /// The API key that invoked it.
    actor_key_id: Option<String>,
    /// The execution that called this one (absent for a root).
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_execution_id: Option<String>,
    /// The root of this one's call tree.
    root_execution_id: Option<String>,
    /// 0 for a root; 1 for what it called; …
    call_depth: i32,
    /// The W3C trace it ran in, its own span, and the span it was asked from (absent
    /// for executions recorded before traces were).
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    /// Capability use and refusals.
    capabilities: serde_json::Value,
    /// Characters the database could not hold (NUL), replaced by U+FFFD in this record.
    replaced_characters: i64,
    /// Only the outcome, usage and cost could be stored.
    record_degraded: bool,
    /// The task this execution is an attempt of (absent for an invocation).
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<String>,
    /// Which attempt of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs: Option<Vec<LogEntry>>,
    /// The whole output (single-execution view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<serde_json::Value>,
    /// The whole input, when the agent's policy keeps it (single-execution view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<serde_json::Value>,
    /// Its model calls, each with tokens and cost (single-execution view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    llm_calls: Option<Vec<LlmCallView>>,
}

/// One model call of an execution.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LlmCall)]
struct LlmCallView {
    #[serde(flatten)]
    row: crate::db::llm_calls::LlmCallRow,
    /// The cost in dollars.
    cost: String,
}

impl ExecutionView {
    fn new(r: ExecutionRecord, with_logs: bool) -> Self {
        let json = |text: Option<String>| {
            text.filter(|_| with_logs)
                .map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))
        };
        ExecutionView {
            cost: format_dollars(r.cost_picodollars),
            logs: with_logs.then_some(r.logs.0),
            output: json(r.output),
            input: json(r.input),
            llm_calls: None,
            id: r.id,
            agent: r.agent_name,
            agent_id: r.agent_id,
            version: r.version,
            version_id: r.version_id,
            action: r.action,
            outcome: r.outcome,
            error_code: r.error_code,
            error_message: r.error_message,
            input_bytes: r.input_bytes,
            input_excerpt: r.input_excerpt,
            output_bytes: r.output_bytes,
            output_excerpt: r.output_excerpt,
            fuel: r.fuel,
            peak_memory_bytes: r.peak_memory_bytes,
            wall_time_us: r.wall_time_us,
            log_bytes: r.log_bytes,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            correlation_id: r.correlation_id,
            actor_key_id: r.actor_key_id,
            parent_execution_id: r.parent_execution_id,
            root_execution_id: r.root_execution_id,
            call_depth: r.call_depth,
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_span_id: r.parent_span_id,
            capabilities: r.capabilities.0,
            replaced_characters: r.replaced_characters,
            record_degraded: r.record_degraded,
            task_id: r.task_id,
            attempt: r.attempt,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this agent's (by name; deleted agents' history included). An unknown name
    /// gives an empty page.
    agent: Option<String>,
    /// Only this outcome.
    #[param(value_type = Option<Outcome>)]
    outcome: Option<String>,
    /// Only executions invoked with this correlation id.
    correlation_id: Option<String>,
    /// Only the executions of the call tree under this root execution id (the root
    /// included).
    root: Option<String>,
    /// Only from this time on (inclusive), RFC 3339, e.g. `2026-01-31T00:00:00Z`.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Only before this time (exclusive), RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
    /// Items per page, 1 to 200 (default 50). Outside that range: `400 invalid_query`.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List executions
///
/// **Role:** viewer.
///
/// The caller's tenant's executions, newest first, without logs. Filters combine;
/// unknown parameters are `400`.
#[utoipa::path(
    get,
    path = "/executions",
    operation_id = "listExecutions",
    tag = "executions",
    params(
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of executions.", body = Paged<ExecutionView>),
        (status = 400, response = responses::InvalidQuery),
    )
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Paged<ExecutionView>>, ApiError> {
    principal
        .require(&state, Role::Viewer, "execution.list", "execution", None)
        .await?;
    let limit = Page {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    if let Some(outcome) = &q.outcome
        && Outcome::parse(outcome).is_none()
    {
        return Err(ApiError::not_one_of(
            "outcome",
            Outcome::ALL.iter().map(|o| o.as_str()),
        ));
    }
    let filter = ExecutionFilter {
        // Deleted agents keep their history, so this is any agent of this name.
        agent_name: q.agent,
        outcome: q.outcome,
        correlation_id: q.correlation_id,
        root: q.root,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
    };
    let rows = executions::list(
        &state.db,
        principal.tenant_id(),
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let page = Paged::from_rows(rows, limit, |r| r.id.clone());
    Ok(Json(Paged {
        items: page
            .items
            .into_iter()
            .map(|r| ExecutionView::new(r, false))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get an execution
///
/// **Role:** viewer.
///
/// One execution with its logs.
#[utoipa::path(
    get,
    path = "/executions/{id}",
    operation_id = "getExecution",
    tag = "executions",
    params(
        ("id" = String, Path, description = "The execution's id."),
    ),
    responses(
        (status = 200, description = "The execution.", body = ExecutionView),
        (status = 400, response = responses::InvalidPath),
        (status = 404, description = "No execution with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<ExecutionView>, ApiError> {
    principal
        .require(
            &state,
            Role::Viewer,
            "execution.get",
            "execution",
            Some(&id),
        )
        .await?;
    let record = executions::get(&state.db, principal.tenant_id(), &id)
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(format!("execution {id:?}")),
            e => e.into(),
        })?;
    let calls = crate::db::llm_calls::of_execution(&state.db, principal.tenant_id(), &id).await?;
    let mut view = ExecutionView::new(record, true);
    view.llm_calls = Some(
        calls
            .into_iter()
            .map(|row| LlmCallView {
                cost: format_dollars(row.cost_picodollars),
                row,
            })
            .collect(),
    );
    Ok(Json(view))
}
