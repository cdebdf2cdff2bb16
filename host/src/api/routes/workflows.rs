//! Workflows and their stored definitions: submit (inline or by name), read (with
//! `?wait=`), list, cancel; store definitions by name, versioned. The engine is in
//! [`crate::workflows`].

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::types::Json as DbJson;

use super::parse_time;
use crate::api::extract::{ApiId, ApiJson, ApiPath, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::DbError;
use crate::db::keys::Role;
use crate::db::tasks;
use crate::db::workflows::{
    self as db, DefinitionRow, StepRow, Usage, WorkflowFilter, WorkflowRow,
};
use crate::tasks::TaskError;
use crate::workflows::{self, Start, WorkflowError, WorkflowSpec, WorkflowState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/workflows", post(submit).get(list))
        .route("/workflows/{id}", get(show))
        .route("/workflows/{id}/cancel", post(cancel))
        .route("/workflow-definitions", get(list_definitions))
        .route(
            "/workflow-definitions/{name}",
            get(show_definition).put(put_definition),
        )
}

pub(crate) fn workflow_error(e: WorkflowError) -> ApiError {
    match e {
        WorkflowError::Invalid { code, message } => ApiError::bad_request(code, message),
        WorkflowError::NotFound(what) => ApiError::not_found(what),
        e @ WorkflowError::Finished(_) => ApiError::conflict("workflow_finished", e.to_string()),
        e @ WorkflowError::QueueFull { .. } => ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string())
        },
        e @ WorkflowError::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            e.to_string(),
        ),
        e @ WorkflowError::InProgress => {
            ApiError::conflict("idempotency_in_progress", e.to_string())
        }
        WorkflowError::Db(e) => e.into(),
    }
}

/// A workflow as the API shows it.
#[derive(Debug, Serialize)]
struct WorkflowView {
    id: String,
    state: WorkflowState,
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<i32>,
    input: Value,
    output: Option<Value>,
    error: Option<TaskError>,
    cancel_requested: bool,
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageView>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize)]
struct StepView {
    name: String,
    state: String,
    task_id: Option<String>,
    /// Execution ids of its task's attempts, first first.
    attempts: Vec<AttemptView>,
    output: Option<Value>,
    error: Option<TaskError>,
    /// Its place among the steps that succeeded.
    completed_seq: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compensation: Option<CompensationView>,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize)]
struct AttemptView {
    attempt: i32,
    execution_id: String,
    outcome: Option<String>,
}

#[derive(Debug, Serialize)]
struct CompensationView {
    state: String,
    task_id: Option<String>,
    attempts: Vec<AttemptView>,
    error: Option<TaskError>,
}

#[derive(Debug, Serialize)]
struct UsageView {
    executions: i64,
    cost_usd: String,
    cost_picodollars: i64,
    fuel: i64,
    wall_time_ms: f64,
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
        let compensation = match &s.compensation_state {
            Some(c) => Some(CompensationView {
                state: c.clone(),
                attempts: attempts_of(state, tenant_id, s.compensation_task_id.as_deref()).await?,
                task_id: s.compensation_task_id.clone(),
                error: s.compensation_task_error.clone().map(|e| e.0),
            }),
            None => None,
        };
        views.push(StepView {
            attempts: attempts_of(state, tenant_id, s.task_id.as_deref()).await?,
            output: json_text(s.output.as_deref()),
            error: s.error.map(|e| e.0),
            name: s.name,
            state: s.state,
            task_id: s.task_id,
            completed_seq: s.completed_seq,
            compensation,
            started_at: s.started_at,
            finished_at: s.finished_at,
        });
    }
    let mut view = WorkflowView::new(workflow);
    view.steps = Some(views);
    view.usage = Some(usage.into());
    Ok(view)
}

/// `POST /v1/workflows`: steps inline, or a stored definition by name.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<workflows::StepSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compensate_on_cancel: Option<bool>,
    #[serde(default = "empty_object")]
    input: Value,
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
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 200 visible ASCII characters",
                ));
            }
            Ok(Some(key.to_string()))
        }
    }
}

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
                "invalid_workflow",
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
            serde_json::json!({ "code": "queue_full", "max_queued_tasks": max, "waiting": waiting }),
        ));
        state.audit_alone(event).await;
        return Err(workflow_error(result.expect_err("queue full")));
    }
    let (row, _) = result.map_err(workflow_error)?;
    tx.commit().await?;
    state.task_wake.notify_one();
    let location = format!("/v1/workflows/{}", row.id);
    let view = full_view(&state, tenant_id, row).await?;
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    /// Hold the request until the workflow ends or this passes (at most 60 s).
    wait: Option<String>,
}

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
                    "invalid_query",
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    definition: Option<String>,
    correlation_id: Option<String>,
    schedule_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

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
#[derive(Debug, Serialize)]
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
            "invalid_workflow",
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
            "definition_in_progress",
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionQuery {
    version: Option<i32>,
}

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
