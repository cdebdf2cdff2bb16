//! Executions: list with filters and cursor pagination; get one with its logs.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::parse_time;
use crate::api::extract::{ApiId, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::costs::format_dollars;
use crate::db::DbError;
use crate::db::executions::{self, ExecutionFilter, ExecutionRecord};
use crate::db::keys::Role;
use crate::runtime::{LogEntry, Outcome};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/executions", get(list))
        .route("/executions/{id}", get(show))
}

/// An execution as the API shows it. Logs only appear on the single-execution view.
#[derive(Debug, Serialize)]
pub struct ExecutionView {
    id: String,
    agent: String,
    agent_id: String,
    version: String,
    version_id: String,
    action: String,
    outcome: String,
    error_code: Option<String>,
    error_message: Option<String>,
    input_bytes: i64,
    input_excerpt: String,
    output_bytes: i64,
    output_excerpt: Option<String>,
    fuel: i64,
    peak_memory_bytes: i64,
    wall_time_us: i64,
    log_bytes: i64,
    cost: String,
    queued_at: chrono::DateTime<chrono::Utc>,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: chrono::DateTime<chrono::Utc>,
    correlation_id: Option<String>,
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
#[derive(Debug, Serialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    agent: Option<String>,
    outcome: Option<String>,
    correlation_id: Option<String>,
    /// Only the call tree under this root execution.
    root: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

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
