//! Tasks: submit (one, or a batch), read (with `?wait=` long-polling), list, cancel.
//! The work itself is done by the task workers of every node ([`crate::tasks`]).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as DbJson;

use super::parse_time;
use crate::api::extract::{ApiId, ApiJson, ApiPath, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::DbError;
use crate::db::keys::Role;
use crate::db::tasks::{self, AttemptRow, Cancelled, TaskFilter, TaskRow};
use crate::policy::LimitOverrides;
use crate::tasks::submit::{self, SubmitError, Submitter, TaskSpec};
use crate::tasks::{Backoff, TaskError, TaskState};

/// The longest `?wait=` may hold a request.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents/{name}/tasks", post(submit_one))
        .route("/tasks", post(submit_batch).get(list))
        .route("/tasks/{id}", get(show))
        .route("/tasks/{id}/cancel", post(cancel))
}

/// A task as the API shows it.
#[derive(Debug, Serialize)]
pub struct TaskView {
    id: String,
    agent: String,
    action: String,
    state: TaskState,
    priority: i32,
    run_at: chrono::DateTime<chrono::Utc>,
    max_attempts: i32,
    backoff: Backoff,
    retry_timeouts: bool,
    wait_for_budget: bool,
    limits: LimitOverrides,
    correlation_id: Option<String>,
    /// The outcome of the last attempt that ended.
    outcome: Option<String>,
    /// The full output of the attempt that succeeded.
    result: Option<Value>,
    error: Option<TaskError>,
    cancel_requested: bool,
    /// Attempts started.
    attempt_count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_on: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_execution_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One attempt: its execution and how it ended.
#[derive(Debug, Serialize)]
struct AttemptView {
    attempt: i32,
    execution_id: String,
    node: String,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    outcome: Option<String>,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        AttemptView {
            attempt: a.attempt,
            execution_id: a.execution_id,
            node: a.node,
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome,
        }
    }
}

impl TaskView {
    fn new(t: TaskRow, now: chrono::DateTime<chrono::Utc>) -> TaskView {
        // What waits shows whether it may start now.
        let state = match t.state() {
            TaskState::Scheduled if t.run_at <= now => TaskState::Queued,
            TaskState::Queued if t.run_at > now => TaskState::Scheduled,
            state => state,
        };
        TaskView {
            state,
            result: t
                .result
                .as_deref()
                .map(|r| serde_json::from_str(r).unwrap_or(Value::Null)),
            error: t.error.map(|DbJson(e)| e),
            id: t.id,
            agent: t.agent_name,
            action: t.action,
            priority: t.priority,
            run_at: t.run_at,
            max_attempts: t.max_attempts,
            backoff: t.backoff.0,
            retry_timeouts: t.retry_timeouts,
            wait_for_budget: t.wait_for_budget,
            limits: t.limits.0,
            correlation_id: t.correlation_id,
            outcome: t.outcome,
            cancel_requested: t.cancel_requested,
            attempt_count: t.attempts,
            attempts: None,
            depends_on: None,
            input: None,
            parent_execution_id: t.parent_execution_id,
            created_at: t.created_at,
            updated_at: t.updated_at,
            finished_at: t.finished_at,
        }
    }
}

/// A task with its attempts, dependencies and input.
async fn full_view(state: &AppState, tenant_id: &str, task: TaskRow) -> Result<TaskView, ApiError> {
    let attempts = tasks::attempts(&state.db, tenant_id, &task.id).await?;
    let depends_on = tasks::depends_on(&state.db, tenant_id, &task.id).await?;
    let input = serde_json::from_str(&task.input).unwrap_or(Value::Null);
    let mut view = TaskView::new(task, state.quotas.clock().now());
    view.attempts = Some(attempts.into_iter().map(AttemptView::from).collect());
    view.depends_on = Some(depends_on);
    view.input = Some(input);
    Ok(view)
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        e @ SubmitError::InProgress => ApiError::conflict("idempotency_in_progress", e.to_string()),
        SubmitError::Invalid { code, message } => ApiError::bad_request(code, message),
        SubmitError::AgentNotFound(name) => ApiError::not_found(format!("agent {name:?}")),
        e @ SubmitError::QueueFull { .. } => ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
        },
        e @ SubmitError::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            e.to_string(),
        ),
        SubmitError::Db(e) => e.into(),
    }
}

async fn submit(
    state: &AppState,
    principal: &Principal,
    specs: Vec<TaskSpec>,
    headers: &HeaderMap,
) -> Result<(Vec<TaskRow>, bool), ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().unwrap_or("").trim();
            if key.is_empty() || key.len() > 200 {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 200 visible ASCII characters",
                ));
            }
            Some(key.to_string())
        }
    };
    let submitter = Submitter {
        actor: principal.actor(),
        parent: None,
    };
    let result = submit::submit(&state.invocations, &submitter, specs, key.as_deref()).await;
    if let Err(SubmitError::QueueFull { max, waiting }) = &result {
        let mut event = principal.event("task.submit", "tenant", Some(principal.tenant_id()));
        event.result = "denied".into();
        event.after = Some(DbJson(
            serde_json::json!({ "code": "queue_full", "max_queued_tasks": max, "waiting": waiting }),
        ));
        state.audit_alone(event).await;
    }
    let stored = result.map_err(submit_error)?;
    if stored.1 {
        state.task_wake.notify_one();
    }
    Ok(stored)
}

async fn submit_one(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(mut spec): ApiJson<TaskSpec>,
) -> Result<Response, ApiError> {
    principal
        .require_on_agent(&state, Role::Developer, "task.submit", &name)
        .await?;
    if spec.agent.as_ref().is_some_and(|a| *a != name) {
        return Err(ApiError::bad_request(
            "invalid_tasks",
            "agent names another agent than the path",
        ));
    }
    if spec.key.is_some() {
        return Err(ApiError::bad_request(
            "invalid_tasks",
            "key names a task within a batch; submit batches to /v1/tasks",
        ));
    }
    spec.agent = Some(name);
    let (mut rows, _) = submit(&state, &principal, vec![spec], &headers).await?;
    let task = rows.pop().expect("one task");
    let location = format!("/v1/tasks/{}", task.id);
    let view = full_view(&state, principal.tenant_id(), task).await?;
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    tasks: Vec<TaskSpec>,
}

#[derive(Debug, Serialize)]
struct BatchView {
    tasks: Vec<TaskView>,
}

async fn submit_batch(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<Batch>,
) -> Result<(StatusCode, Json<BatchView>), ApiError> {
    principal
        .require(&state, Role::Developer, "task.submit", "task", None)
        .await?;
    let (rows, _) = submit(&state, &principal, batch.tasks, &headers).await?;
    let now = state.quotas.clock().now();
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchView {
            tasks: rows.into_iter().map(|t| TaskView::new(t, now)).collect(),
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    /// Hold the request until the task ends or this passes (at most 60 s), e.g. `30s`.
    wait: Option<String>,
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Json<TaskView>, ApiError> {
    principal
        .require(&state, Role::Viewer, "task.get", "task", Some(&id))
        .await?;
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(text) => crate::cli::units::parse_duration(text)
            .ok()
            .filter(|w| *w <= MAX_WAIT)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("wait must be a duration of at most {MAX_WAIT:?}, such as 30s"),
                )
            })?,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(10);
    loop {
        let task = tasks::get(&state.db, principal.tenant_id(), &id)
            .await
            .map_err(|e| match e {
                DbError::NotFound => ApiError::not_found(format!("task {id:?}")),
                e => e.into(),
            })?;
        if task.state().is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(full_view(&state, principal.tenant_id(), task).await?));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    agent: Option<String>,
    state: Option<String>,
    correlation_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Paged<TaskView>>, ApiError> {
    principal
        .require(&state, Role::Viewer, "task.list", "task", None)
        .await?;
    let limit = Page {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    if let Some(name) = &q.state
        && TaskState::parse(name).is_none()
    {
        return Err(ApiError::not_one_of(
            "state",
            TaskState::ALL.iter().map(|s| s.as_str()),
        ));
    }
    let filter = TaskFilter {
        agent_name: q.agent,
        state: q.state,
        correlation_id: q.correlation_id,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        now: state.quotas.clock().now(),
    };
    let rows = tasks::list(
        &state.db,
        principal.tenant_id(),
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let page = Paged::from_rows(rows, limit, |t| t.id.clone());
    let now = state.quotas.clock().now();
    Ok(Json(Paged {
        items: page
            .items
            .into_iter()
            .map(|t| TaskView::new(t, now))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<TaskView>, ApiError> {
    principal
        .require(&state, Role::Developer, "task.cancel", "task", Some(&id))
        .await?;
    let now = state.quotas.clock().now();
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    let cancelled = tasks::cancel(&mut tx, principal.tenant_id(), &id, now)
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(format!("task {id:?}")),
            e => e.into(),
        })?;
    if cancelled == Cancelled::AlreadyFinal {
        return Err(ApiError::conflict(
            "task_finished",
            format!("task {id:?} has already ended"),
        ));
    }
    let mut event = principal.event("task.cancel", "task", Some(&id));
    event.after = Some(DbJson(serde_json::json!({
        "state": if cancelled == Cancelled::Now { "cancelled" } else { "running" },
        "cancel_requested": cancelled == Cancelled::Requested,
    })));
    crate::db::audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    let task = tasks::get(&state.db, principal.tenant_id(), &id).await?;
    Ok(Json(full_view(&state, principal.tenant_id(), task).await?))
}
