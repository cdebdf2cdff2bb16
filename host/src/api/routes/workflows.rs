//! Workflows and their stored definitions: submit (inline or by name), read (with
//! `?wait=`), list, cancel; store definitions by name, versioned. The engine is in
//! [`crate::workflows`].

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
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
use crate::db::tasks;
use crate::db::workflows::{
    self as db, DefinitionRow, StepRow, Usage, WorkflowFilter, WorkflowRow,
};
use crate::tasks::TaskError;
use crate::workflows::{self, Start, Started, WorkflowError, WorkflowSpec, WorkflowState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list))
        .routes(routes!(show))
        .routes(routes!(cancel))
        .routes(routes!(list_definitions))
        .routes(routes!(show_definition, put_definition))
}

pub(crate) fn workflow_error(e: WorkflowError) -> ApiError {
    match e {
        WorkflowError::Invalid { code, message } => ApiError::bad_request(code, message),
        WorkflowError::NotFound(what) => ApiError::not_found(what),
        e @ WorkflowError::Finished(_) => {
            ApiError::conflict(ErrorCode::WorkflowFinished, e.to_string())
        }
        e @ WorkflowError::QueueFull { .. } => ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::QueueFull,
                e.to_string(),
            )
        },
        e @ WorkflowError::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            e.to_string(),
        ),
        e @ WorkflowError::InProgress => {
            ApiError::conflict(ErrorCode::IdempotencyInProgress, e.to_string())
        }
        WorkflowError::Db(e) => e.into(),
    }
}

/// A workflow as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Workflow)]
struct WorkflowView {
    id: String,
    state: WorkflowState,
    /// The stored definition it runs, if started by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
    /// That definition's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i32>,
    input: Value,
    /// Its output, once it succeeded.
    output: Option<Value>,
    /// Why it failed (`step_failed`, `unresolved_path`) or was cancelled (`cancelled`).
    error: Option<TaskError>,
    cancel_requested: bool,
    correlation_id: Option<String>,
    /// The schedule that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_id: Option<String>,
    /// Absent in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageView>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A step of a workflow.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WorkflowStep)]
struct StepView {
    name: String,
    state: String,
    /// Its task, once enqueued.
    task_id: Option<String>,
    /// Execution ids of its task's attempts, first first.
    attempts: Vec<AttemptView>,
    /// Its output, once it succeeded.
    output: Option<Value>,
    /// Why it failed, was skipped (`condition_false`, `dependency_skipped`) or
    /// cancelled.
    error: Option<TaskError>,
    /// Its place among the steps that succeeded.
    completed_seq: Option<i32>,
    /// Its compensation, once due.
    #[serde(skip_serializing_if = "Option::is_none")]
    compensation: Option<CompensationView>,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An attempt of a step's task.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WorkflowAttempt)]
struct AttemptView {
    attempt: i32,
    execution_id: String,
    outcome: Option<String>,
}

/// How a step's compensation went.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CompensationState)]
struct CompensationView {
    state: String,
    task_id: Option<String>,
    attempts: Vec<AttemptView>,
    error: Option<TaskError>,
}

/// What a workflow's executions used and cost, together.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WorkflowUsage)]
struct UsageView {
    executions: i64,
    cost_usd: String,
    cost_picodollars: i64,
    fuel: i64,
    wall_time_ms: f64,
    /// The highest of any execution.
    peak_memory_bytes: i64,
    input_tokens: i64,
    output_tokens: i64,
}

impl From<Usage> for UsageView {
    fn from(u: Usage) -> Self {
        UsageView {
            executions: u.executions,
            cost_usd: crate::costs::format_dollars(u.cost_picodollars),
            cost_picodollars: u.cost_picodollars,
            fuel: u.fuel,
            wall_time_ms: u.wall_time_us as f64 / 1000.0,
            peak_memory_bytes: u.peak_memory_bytes,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        }
    }
}

fn json_text(text: Option<&str>) -> Option<Value> {
    text.map(|t| serde_json::from_str(t).unwrap_or(Value::Null))
}

impl WorkflowView {
    fn new(w: WorkflowRow) -> WorkflowView {
        WorkflowView {
            state: WorkflowState::parse(&w.state).unwrap_or(WorkflowState::Failed),
            input: serde_json::from_str(&w.input).unwrap_or(Value::Null),
            output: json_text(w.output.as_deref()),
            error: w.error.map(|DbJson(e)| e),
            id: w.id,
            definition: w.definition_name,
            version: w.definition_version,
            cancel_requested: w.cancel_requested,
            correlation_id: w.correlation_id,
            schedule_id: w.schedule_id,
            steps: None,
            usage: None,
            created_at: w.created_at,
            updated_at: w.updated_at,
            finished_at: w.finished_at,
        }
    }
}

async fn attempts_of(
    state: &AppState,
    tenant_id: &str,
    task: Option<&str>,
) -> Result<Vec<AttemptView>, ApiError> {
    let Some(task) = task else {
        return Ok(Vec::new());
    };
    Ok(tasks::attempts(&state.db, tenant_id, task)
        .await?
        .into_iter()
        .map(|a| AttemptView {
            attempt: a.attempt,
            execution_id: a.execution_id,
            outcome: a.outcome,
        })
        .collect())
}

/// A workflow with its steps (attempts, outputs, compensations) and usage.
async fn full_view(
    state: &AppState,
    tenant_id: &str,
    workflow: WorkflowRow,
) -> Result<WorkflowView, ApiError> {
    let mut tx = state.db.begin_read(tenant_id).await?;
    let steps: Vec<StepRow> = db::steps(&mut tx, &workflow.id).await?;
    tx.commit().await?;
    let usage = db::usage(&state.db, tenant_id, &workflow.id).await?;
    let mut views = Vec::with_capacity(steps.len());
    for s in steps {
        let attempts = attempts_of(state, tenant_id, s.task_id.as_deref()).await?;
        let compensation = match &s.compensation_state {
            Some(_) => attempts_of(state, tenant_id, s.compensation_task_id.as_deref()).await?,
            None => Vec::new(),
        };
        views.push(step_view(s, attempts, compensation));
    }
    let mut view = WorkflowView::new(workflow);
    view.steps = Some(views);
    view.usage = Some(usage.into());
    Ok(view)
}

/// A workflow just stored, as its transaction left it: no attempt has started and
/// nothing has been spent yet.
fn submitted_view(workflow: WorkflowRow, steps: Vec<StepRow>) -> WorkflowView {
    let mut view = WorkflowView::new(workflow);
    view.steps = Some(
        steps
            .into_iter()
            .map(|s| step_view(s, Vec::new(), Vec::new()))
            .collect(),
    );
    view.usage = Some(Usage::default().into());
    view
}

fn step_view(
    s: StepRow,
    attempts: Vec<AttemptView>,
    compensation_attempts: Vec<AttemptView>,
) -> StepView {
    let compensation = s.compensation_state.as_ref().map(|c| CompensationView {
        state: c.clone(),
        attempts: compensation_attempts,
        task_id: s.compensation_task_id.clone(),
        error: s.compensation_task_error.clone().map(|e| e.0),
    });
    StepView {
        attempts,
        output: json_text(s.output.as_deref()),
        error: s.error.map(|e| e.0),
        name: s.name,
        state: s.state,
        task_id: s.task_id,
        completed_seq: s.completed_seq,
        compensation,
        started_at: s.started_at,
        finished_at: s.finished_at,
    }
}

/// `POST /v1/workflows`: steps inline, or a stored definition by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WorkflowSubmission)]
struct SubmitBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<workflows::StepSpec>>,
    /// As in WorkflowDefinitionSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compensate_on_cancel: Option<bool>,
    /// The workflow's input (`$.input`). Default `{}`.
    #[serde(default = "empty_object")]
    input: Value,
    /// Kept with the workflow and carried by its steps' tasks (default: the workflow's
    /// id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let key = value.to_str().unwrap_or("").trim();
            if key.is_empty() || key.len() > 200 {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidIdempotencyKey,
                    "Idempotency-Key must be 1 to 200 visible ASCII characters",
                ));
            }
            Ok(Some(key.to_string()))
        }
    }
}

/// Submit a workflow
///
/// **Role:** developer.
///
/// Stores the workflow and its steps in one transaction and enqueues the steps that may
/// start; the others are enqueued as their dependencies end, each with its input built
/// from stored outputs (docs/WORKFLOWS.md). Everything is checked first, and a refusal
/// stores nothing: an unknown step in `depends_on` (`unknown_step`), a cycle
/// (`workflow_cycle`), a path that reads a step the step does not depend on or a
/// malformed path (`invalid_reference`), a malformed `when` (`invalid_condition`), an
/// agent that is not a live agent of the tenant (`unknown_agent`), a step's task fields
/// (`invalid_tasks`, `invalid_limits`); each message names the step. Recorded in the
/// audit trail (`workflow.submit`).
#[utoipa::path(
    post,
    path = "/workflows",
    operation_id = "submitWorkflow",
    tag = "workflows",
    params(
        ("Idempotency-Key" = String, Header, description = "1 to 200 visible ASCII characters, unique per tenant. A retry with the same key and the same submission returns the workflow it stored, with `202`, and stores nothing; with a different submission it is `422 idempotency_key_reused`; while the first is being stored, `409 idempotency_in_progress`."),
    ),
    request_body(content = SubmitBody, content_type = "application/json", description = ""),
    responses(
        (status = 202, description = "The workflow, with its steps. `Location: /v1/workflows/{id}`.", body = WorkflowView),
        (status = 400, description = "Refused before anything was stored; the message names the step. Codes: `invalid_workflow`, `unknown_step`, `workflow_cycle`, `invalid_reference`, `invalid_condition`, `unknown_agent`, `invalid_tasks`, `invalid_limits`, `invalid_json`, `invalid_idempotency_key`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No stored definition of this name (and version). Codes: `not_found`.", body = ErrorBody),
        (status = 409, description = "A submission with this Idempotency-Key is being stored. Codes: `idempotency_in_progress`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "This Idempotency-Key was used for another submission. Codes: `idempotency_key_reused`.", body = ErrorBody),
        (status = 429, description = "The tenant's cap on waiting tasks would be passed by the workflow's steps. Codes: `queue_full`.", body = ErrorBody),
    )
)]
async fn submit(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitBody>,
) -> Result<Response, ApiError> {
    principal
        .require(&state, Role::Developer, "workflow.submit", "workflow", None)
        .await?;
    let key = idempotency_key(&headers)?;
    let hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&body).expect("a body serializes"),
    ));
    let tenant_id = principal.tenant_id();
    let pipeline = &state.invocations;
    let (spec, definition) = match (&body.definition, body.steps) {
        (Some(name), None) if body.output.is_none() && body.compensate_on_cancel.is_none() => {
            let (spec, version) =
                crate::schedules::stored_workflow(pipeline, tenant_id, name, body.version)
                    .await
                    .map_err(workflow_error)?;
            (spec, Some((name.clone(), version)))
        }
        (None, Some(steps)) if body.version.is_none() => {
            let spec = WorkflowSpec {
                steps,
                output: body.output,
                compensate_on_cancel: body.compensate_on_cancel.unwrap_or(false),
            };
            workflows::validate(pipeline, tenant_id, &spec)
                .await
                .map_err(workflow_error)?;
            (spec, None)
        }
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidWorkflow,
                "give `steps` (with `output` and `compensate_on_cancel` if wanted), or the \
                 `definition` of a stored workflow (with `version` if wanted), not both",
            ));
        }
    };
    let start = Start {
        spec,
        definition,
        input: body.input,
        correlation_id: body.correlation_id,
        schedule_id: None,
    };
    let actor = principal.actor();
    let mut tx = state.db.begin(tenant_id).await?;
    let result = workflows::start(
        &mut tx,
        pipeline,
        &actor,
        start,
        key.as_deref().map(|k| (k, hash.as_str())),
    )
    .await;
    if let Err(WorkflowError::QueueFull { max, waiting }) = &result {
        drop(tx);
        let mut event = principal.event("workflow.submit", "tenant", Some(tenant_id));
        event.result = "denied".into();
        event.after = Some(DbJson(
            serde_json::json!({ "code": ErrorCode::QueueFull, "max_queued_tasks": max, "waiting": waiting }),
        ));
        state.audit_alone(event).await;
        return Err(workflow_error(result.expect_err("queue full")));
    }
    let started = result.map_err(workflow_error)?;
    tx.commit().await?;
    state.task_wake.notify_one();
    let view = match started {
        // As committed: no step has run yet, so nothing is read back.
        Started::New(row, steps) => submitted_view(row, steps),
        Started::Before(row) => full_view(&state, tenant_id, row).await?,
    };
    let location = format!("/v1/workflows/{}", view.id);
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ShowQuery {
    /// Hold the request until the workflow ends or this passes, e.g. `30s` (at most 60
    /// s). Longer, or not a duration: `400 invalid_query`. Default: answer at once.
    wait: Option<String>,
}

/// Show a workflow
///
/// **Role:** viewer.
///
/// Its state, each step's state, attempts (execution ids), output or error and
/// compensation, and the usage and cost of all its executions. `?wait=` (a duration of
/// at most 60 s) holds the request until the workflow ends (it is no longer `running`
/// or `compensating`) or the time passes.
#[utoipa::path(
    get,
    path = "/workflows/{id}",
    operation_id = "getWorkflow",
    tag = "workflows",
    params(
        ("id" = String, Path, description = "The workflow's id."),
        ShowQuery,
    ),
    responses(
        (status = 200, description = "The workflow.", body = WorkflowView),
        (status = 400, response = responses::InvalidPathOrQuery),
        (status = 404, description = "No workflow with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Json<WorkflowView>, ApiError> {
    principal
        .require(&state, Role::Viewer, "workflow.get", "workflow", Some(&id))
        .await?;
    let max = super::tasks::MAX_WAIT;
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(text) => crate::cli::units::parse_duration(text)
            .ok()
            .filter(|w| *w <= max)
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    format!("wait must be a duration of at most {max:?}, such as 30s"),
                )
            })?,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(10);
    loop {
        let workflow = db::get(&state.db, principal.tenant_id(), &id)
            .await
            .map_err(|e| match e {
                DbError::NotFound => ApiError::not_found(format!("workflow {id:?}")),
                e => e.into(),
            })?;
        let ended = WorkflowState::parse(&workflow.state).is_none_or(WorkflowState::is_final);
        if ended || tokio::time::Instant::now() >= deadline {
            return Ok(Json(
                full_view(&state, principal.tenant_id(), workflow).await?,
            ));
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
    /// Only workflows in this state.
    #[param(value_type = Option<WorkflowState>)]
    state: Option<String>,
    /// Only runs of this stored definition.
    definition: Option<String>,
    /// Only workflows with this correlation id.
    correlation_id: Option<String>,
    /// Only workflows started by this schedule.
    schedule_id: Option<String>,
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

/// List workflows
///
/// **Role:** viewer.
///
/// The caller's tenant's workflows, newest first, without steps and usage.
#[utoipa::path(
    get,
    path = "/workflows",
    operation_id = "listWorkflows",
    tag = "workflows",
    params(
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of workflows.", body = Paged<WorkflowView>),
        (status = 400, response = responses::InvalidQuery),
    )
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Paged<WorkflowView>>, ApiError> {
    principal
        .require(&state, Role::Viewer, "workflow.list", "workflow", None)
        .await?;
    let limit = Page {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    if let Some(name) = &q.state
        && WorkflowState::parse(name).is_none()
    {
        return Err(ApiError::not_one_of(
            "state",
            WorkflowState::ALL.iter().map(|s| s.as_str()),
        ));
    }
    let filter = WorkflowFilter {
        state: q.state,
        definition: q.definition,
        correlation_id: q.correlation_id,
        schedule_id: q.schedule_id,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
    };
    let rows = db::list(
        &state.db,
        principal.tenant_id(),
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let page = Paged::from_rows(rows, limit, |w| w.id.clone());
    Ok(Json(Paged {
        items: page.items.into_iter().map(WorkflowView::new).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Cancel a workflow
///
/// **Role:** developer.
///
/// Its pending steps are cancelled, its running steps' tasks cancelled (a running
/// attempt is stopped by its node within about a second). With `compensate_on_cancel`,
/// the workflow is `compensating` and its completed steps are compensated, last
/// completed first, once nothing runs; otherwise it is `cancelled`. Recorded in the
/// audit trail (`workflow.cancel`).
#[utoipa::path(
    post,
    path = "/workflows/{id}/cancel",
    operation_id = "cancelWorkflow",
    tag = "workflows",
    params(
        ("id" = String, Path, description = "The workflow's id."),
    ),
    responses(
        (status = 200, description = "The workflow, `cancelled` or `compensating`.", body = WorkflowView),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No workflow with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
        (status = 409, description = "The workflow is no longer running. Codes: `workflow_finished`.", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<WorkflowView>, ApiError> {
    principal
        .require(
            &state,
            Role::Developer,
            "workflow.cancel",
            "workflow",
            Some(&id),
        )
        .await?;
    let tenant_id = principal.tenant_id();
    let mut tx = state.db.begin(tenant_id).await?;
    let actor = principal.actor();
    workflows::cancel(&mut tx, &state.invocations, &actor, &id)
        .await
        .map_err(workflow_error)?;
    crate::db::tasks::notify(&mut tx).await?;
    tx.commit().await?;
    state.task_wake.notify_one();
    state.invocations.workflow_wake.notify_one();
    let workflow = db::get(&state.db, tenant_id, &id).await?;
    Ok(Json(full_view(&state, tenant_id, workflow).await?))
}

/// A stored definition as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WorkflowDefinition)]
struct DefinitionView {
    name: String,
    version: i32,
    definition: Value,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<DefinitionRow> for DefinitionView {
    fn from(d: DefinitionRow) -> Self {
        DefinitionView {
            name: d.name,
            version: d.version,
            definition: d.definition.0,
            created_at: d.created_at,
        }
    }
}

/// Store the next version of a workflow definition
///
/// **Role:** developer.
///
/// Validated as a submission is (its agents must exist now), then stored as the next
/// version (1 for the first). Runs started by name keep the version they ran. Recorded
/// in the audit trail (`workflow.define`).
#[utoipa::path(
    put,
    path = "/workflow-definitions/{name}",
    operation_id = "putWorkflowDefinition",
    tag = "workflows",
    params(
        ("name" = String, Path, description = "The workflow definition's name: 1 to 64 letters, digits, `_`, `-` or `.`."),
    ),
    request_body(content = WorkflowSpec, content_type = "application/json", description = ""),
    responses(
        (status = 201, description = "The stored version.", body = DefinitionView),
        (status = 400, description = "Refused, naming the step. Codes: as for a submission.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 409, description = "Another version is being stored at the same time. Codes: `definition_in_progress`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn put_definition(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(spec): ApiJson<WorkflowSpec>,
) -> Result<(StatusCode, Json<DefinitionView>), ApiError> {
    principal
        .require(
            &state,
            Role::Developer,
            "workflow.define",
            "workflow_definition",
            None,
        )
        .await?;
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_name {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidWorkflow,
            "a definition's name is 1 to 64 letters, digits, `_`, `-` or `.`",
        ));
    }
    let tenant_id = principal.tenant_id();
    workflows::validate(&state.invocations, tenant_id, &spec)
        .await
        .map_err(workflow_error)?;
    let now = state.quotas.clock().now();
    let definition = serde_json::to_value(&spec).expect("a spec serializes");
    let mut tx = state.db.begin(tenant_id).await?;
    let row = db::put_definition(
        &mut tx,
        tenant_id,
        &name,
        &definition,
        principal.actor().key_id.as_deref(),
        now,
    )
    .await
    .map_err(|e| match e {
        DbError::Conflict(_) => ApiError::conflict(
            ErrorCode::DefinitionInProgress,
            "another version of this definition is being stored; retry",
        ),
        e => e.into(),
    })?;
    let mut event = principal.event("workflow.define", "workflow_definition", Some(&name));
    event.after = Some(DbJson(serde_json::json!({ "version": row.version })));
    crate::db::audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DefinitionQuery {
    /// This version instead of the latest.
    version: Option<i32>,
}

/// Show a stored workflow definition
///
/// **Role:** viewer.
///
/// The latest version, or `?version=`.
#[utoipa::path(
    get,
    path = "/workflow-definitions/{name}",
    operation_id = "getWorkflowDefinition",
    tag = "workflows",
    params(
        ("name" = String, Path, description = "The workflow definition's name: 1 to 64 letters, digits, `_`, `-` or `.`."),
        DefinitionQuery,
    ),
    responses(
        (status = 200, description = "The definition.", body = DefinitionView),
        (status = 400, response = responses::InvalidQuery),
        (status = 404, description = "No such definition (or version). Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn show_definition(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DefinitionQuery>,
) -> Result<Json<DefinitionView>, ApiError> {
    principal
        .require(
            &state,
            Role::Viewer,
            "workflow.define.get",
            "workflow_definition",
            Some(&name),
        )
        .await?;
    let tenant_id = principal.tenant_id();
    let mut tx = state.db.begin_read(tenant_id).await?;
    let found = db::definition(&mut tx, tenant_id, &name, q.version).await;
    tx.commit().await?;
    let row = found.map_err(|e| match e {
        DbError::NotFound => ApiError::not_found(format!("workflow definition {name:?}")),
        e => e.into(),
    })?;
    Ok(Json(row.into()))
}

/// List stored workflow definitions
///
/// **Role:** viewer.
///
/// The latest version of each of the tenant's definitions, by name.
#[utoipa::path(
    get,
    path = "/workflow-definitions",
    operation_id = "listWorkflowDefinitions",
    tag = "workflows",
    responses(
        (status = 200, description = "The definitions.", body = Paged<DefinitionView>),
    )
)]
async fn list_definitions(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Paged<DefinitionView>>, ApiError> {
    principal
        .require(
            &state,
            Role::Viewer,
            "workflow.define.list",
            "workflow_definition",
            None,
        )
        .await?;
    let rows = db::definitions(&state.db, principal.tenant_id()).await?;
    Ok(Json(Paged {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}
