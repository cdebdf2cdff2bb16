//! Tasks: submit (one, or a batch), read (with `?wait=` long-polling), list, cancel.
//! The work itself is done by the task workers of every node ([`crate::tasks`]).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as DbJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::parse_time;
use crate::api::error::{ErrorBody, ErrorCode, responses};
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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_one))
        .routes(routes!(submit_batch, list))
        .routes(routes!(show))
        .routes(routes!(cancel))
}

/// A task as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Task)]
pub struct TaskView {
    /// The task's id (UUIDv7).
    id: String,
    /// The agent's name at submission.
    agent: String,
    action: String,
    state: TaskState,
    priority: i32,
    /// When it may next start: as submitted, then moved on by retries' backoff and
    /// quota deferrals.
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
    /// Why it failed, was cancelled, or is being retried; null otherwise.
    error: Option<TaskError>,
    /// Cancellation was asked for while an attempt ran.
    cancel_requested: bool,
    /// Attempts started.
    attempt_count: i32,
    /// Its attempts, first first.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
    /// The ids of the tasks it depends on.
    #[serde(skip_serializing_if = "Option::is_none")]
    depends_on: Option<Vec<String>>,
    /// The input, as submitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    /// The execution that submitted it, when an agent did (`submit-task`); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_execution_id: Option<String>,
    /// When it was submitted.
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    /// When it ended; null until then.
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// One attempt: its execution and how it ended.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TaskAttempt)]
struct AttemptView {
    /// 1 for the first.
    attempt: i32,
    /// The id of its execution record (`GET /v1/executions/{id}`, which has `task_id`
    /// and `attempt`). An attempt recorded `node_lost`, `host_failure`,
    /// `budget_exhausted`, `no_active_version` or `not_found` may have no record.
    execution_id: String,
    /// The node that claimed it (`node-<uuid>`, new each time `corral serve` starts).
    node: String,
    /// When it was claimed.
    started_at: chrono::DateTime<chrono::Utc>,
    /// When its outcome was recorded; null while it runs.
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How it ended: an execution outcome (see `Outcome`), or the host's word for an
    /// attempt without one: `node_lost`, `host_failure`, `budget_exhausted`,
    /// `no_active_version`, `not_found`. Null while it runs.
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
        e @ SubmitError::InProgress => {
            ApiError::conflict(ErrorCode::IdempotencyInProgress, e.to_string())
        }
        SubmitError::Invalid { code, message } => ApiError::bad_request(code, message),
        SubmitError::AgentNotFound(name) => ApiError::not_found(format!("agent {name:?}")),
        e @ SubmitError::QueueFull { .. } => ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::QueueFull,
                e.to_string(),
            )
        },
        e @ SubmitError::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
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
                    ErrorCode::InvalidIdempotencyKey,
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
            serde_json::json!({ "code": ErrorCode::QueueFull, "max_queued_tasks": max, "waiting": waiting }),
        ));
        state.audit_alone(event).await;
    }
    let stored = result.map_err(submit_error)?;
    if stored.1 {
        state.task_wake.notify_one();
    }
    Ok(stored)
}

/// Submit a task
///
/// **Role:** developer.
///
/// Stores one task for the agent of the path and answers `202` with it (with its
/// attempts, dependencies and input) and its URL in `Location`. Workers on any node run
/// it later through the same pipeline as `POST /v1/agents/{name}/invoke` (limits,
/// quotas, execution records, costs), retrying failures that may succeed next time;
/// `GET /v1/tasks/{id}?wait=30s` waits for its end. A paused agent's tasks are accepted
/// and wait until it is resumed. See `docs/TASKS.md`.
///
/// The body may leave out `agent`; if it has one, it must be the path's. `key` is for
/// batches (`POST /v1/tasks`) and refused here.
///
/// With an `Idempotency-Key`, a retry of the same submission returns the task it stored
/// without storing another.
#[utoipa::path(
    post,
    path = "/agents/{name}/tasks",
    operation_id = "submitTask",
    tag = "tasks",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ("Idempotency-Key" = String, Header, description = "1 to 200 visible ASCII characters, unique per tenant (spaces around it are trimmed). A retry with the same key and the same submission returns the tasks it stored, with `202`, and stores nothing; with a different submission it is `422 idempotency_key_reused`; while the first is being stored, `409 idempotency_in_progress`. The key stays bound to its tasks as long as they are stored."),
    ),
    request_body(content = TaskSpec, content_type = "application/json", description = "The task."),
    responses(
        (status = 202, description = "The task is stored (or, for a retry with the same `Idempotency-Key`, was stored before).", body = TaskView, headers(("Location" = u64, description = "The task's URL, `/v1/tasks/{id}`."))),
        (status = 400, description = "The path or body is invalid: a field out of range (`invalid_tasks`, naming it), limits looser than the agent's (`invalid_limits`), a `depends_on` id that is not a task of this tenant (`invalid_dependency`). Codes: `invalid_path`, `invalid_json`, `invalid_tasks`, `invalid_limits`, `invalid_dependency`, `invalid_idempotency_key`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
        (status = 409, description = "Another submission with this `Idempotency-Key` is being stored at the same moment; retry to get its tasks. Codes: `idempotency_in_progress`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "This `Idempotency-Key` was used for a different submission. Codes: `idempotency_key_reused`.", body = ErrorBody),
        (status = 429, description = "The tenant's plan caps its waiting tasks (`caps.max_queued_tasks`: `queued`, `scheduled`, `blocked` and `retrying` ones) and this submission would pass the cap; nothing was stored. The refusal is recorded in the audit trail (`task.submit`, result `denied`, `after: {code, max_queued_tasks, waiting}`). Codes: `queue_full`.", body = ErrorBody, headers(("Retry-After" = u64, description = "Always 1: a hint, since a place frees when any waiting task starts or ends."))),
    )
)]
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
            ErrorCode::InvalidTasks,
            "agent names another agent than the path",
        ));
    }
    if spec.key.is_some() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidTasks,
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

/// Tasks to submit together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TaskBatch)]
struct Batch {
    /// The tasks; each names its `agent`.
    tasks: Vec<TaskSpec>,
}

/// The submitted tasks, in the order given.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SubmittedTasks)]
struct BatchView {
    tasks: Vec<TaskView>,
}

/// Submit a batch of tasks
///
/// **Role:** developer.
///
/// Stores 1 to 1000 tasks in one transaction, all or nothing, and answers `202` with
/// them in the order given (without attempts, dependencies and input: `GET
/// /v1/tasks/{id}` has those). Each names its `agent`. A `key` names a task within the
/// batch, so that a later task's `depends_on` can name it before it has an id; keys are
/// not stored. A cycle among the batch's dependencies is `400 dependency_cycle`, naming
/// the tasks in it.
///
/// With an `Idempotency-Key`, a retry of the same batch returns the tasks it stored
/// without storing others.
#[utoipa::path(
    post,
    path = "/tasks",
    operation_id = "submitTasks",
    tag = "tasks",
    params(
        ("Idempotency-Key" = String, Header, description = "1 to 200 visible ASCII characters, unique per tenant (spaces around it are trimmed). A retry with the same key and the same submission returns the tasks it stored, with `202`, and stores nothing; with a different submission it is `422 idempotency_key_reused`; while the first is being stored, `409 idempotency_in_progress`. The key stays bound to its tasks as long as they are stored."),
    ),
    request_body(content = Batch, content_type = "application/json", description = "The tasks."),
    responses(
        (status = 202, description = "The tasks are stored (or, for a retry with the same `Idempotency-Key`, were stored before).", body = BatchView),
        (status = 400, description = "The body is invalid; the message names the field and the task (`tasks[2].max_attempts`). Codes: `invalid_json`, `invalid_tasks`, `invalid_limits`, `invalid_dependency`, `dependency_cycle`, `invalid_idempotency_key`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "A task names an agent that does not exist in the caller's tenant; nothing was stored. Codes: `not_found`.", body = ErrorBody),
        (status = 409, description = "Another submission with this `Idempotency-Key` is being stored at the same moment; retry to get its tasks. Codes: `idempotency_in_progress`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "This `Idempotency-Key` was used for a different submission. Codes: `idempotency_key_reused`.", body = ErrorBody),
        (status = 429, description = "The tenant's plan caps its waiting tasks (`caps.max_queued_tasks`: `queued`, `scheduled`, `blocked` and `retrying` ones) and this submission would pass the cap; nothing was stored. The refusal is recorded in the audit trail (`task.submit`, result `denied`, `after: {code, max_queued_tasks, waiting}`). Codes: `queue_full`.", body = ErrorBody, headers(("Retry-After" = u64, description = "Always 1: a hint, since a place frees when any waiting task starts or ends."))),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ShowQuery {
    /// Hold the request until the task ends or this long has passed: a duration of at
    /// most 60 s, such as `30s` or `500ms`. Longer, or not a duration: `400
    /// invalid_query`. Default: answer at once.
    wait: Option<String>,
}

/// Get a task
///
/// **Role:** viewer.
///
/// One task with its attempts (each naming its execution record), dependencies and
/// input. With `?wait=`, the request is held until the task has ended (`succeeded`,
/// `failed` or `cancelled`) or the wait has passed, and then answers `200` with the
/// task as it is: check `state`.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    operation_id = "getTask",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "The task's id."),
        ShowQuery,
    ),
    responses(
        (status = 200, description = "The task.", body = TaskView),
        (status = 400, response = responses::InvalidPathOrQuery),
        (status = 404, description = "No task with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
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
                    ErrorCode::InvalidQuery,
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only tasks of this agent (by name at submission). An unknown name gives an empty
    /// page.
    agent: Option<String>,
    /// Only tasks in this state, as stored. `queued` and `scheduled` are shown by
    /// `run_at` (`scheduled` while it is in the future) but filtered as stored, so ask
    /// for both to see every task waiting to start.
    #[param(value_type = Option<TaskState>)]
    state: Option<String>,
    /// Only tasks submitted with this correlation id.
    correlation_id: Option<String>,
    /// Only tasks submitted from this time on (inclusive), RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    since: Option<String>,
    /// Only tasks submitted before this time (exclusive), RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    until: Option<String>,
    /// Items per page, 1 to 200 (default 50). Outside that range: `400 invalid_query`.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List tasks
///
/// **Role:** viewer.
///
/// The caller's tenant's tasks, newest first, without attempts, dependencies and input.
/// Filters combine; unknown parameters are `400`.
#[utoipa::path(
    get,
    path = "/tasks",
    operation_id = "listTasks",
    tag = "tasks",
    params(
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of tasks.", body = Paged<TaskView>),
        (status = 400, response = responses::InvalidQuery),
    )
)]
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

/// Cancel a task
///
/// **Role:** developer.
///
/// A waiting task (`queued`, `scheduled`, `blocked`, `retrying`) is `cancelled` at
/// once, with error `cancelled`, and so is every waiting task that depends on it,
/// directly or not (error `dependency_failed`). A `running` task gets
/// `cancel_requested: true` and keeps its state: the node running it stops the guest
/// within about a second and records the attempt with outcome `cancelled` (charged for
/// what it used); the task and its dependants are cancelled then. Recorded in the audit
/// trail (`task.cancel`, `after: {state, cancel_requested}`).
#[utoipa::path(
    post,
    path = "/tasks/{id}/cancel",
    operation_id = "cancelTask",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "The task's id."),
    ),
    responses(
        (status = 200, description = "The task, cancelled or with `cancel_requested`.", body = TaskView),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No task with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
        (status = 409, description = "The task has already ended (`succeeded`, `failed` or `cancelled`). Codes: `task_finished`.", body = ErrorBody),
    )
)]
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
            ErrorCode::TaskFinished,
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
