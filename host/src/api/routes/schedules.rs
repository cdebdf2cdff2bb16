//! Schedules: create, list, read (with the next occurrences and the latest handled),
//! pause, resume, delete. The tickers are in [`crate::schedules`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::{ErrorBody, responses};
use crate::api::extract::{ApiId, ApiJson, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::DbError;
use crate::db::keys::Role;
use crate::db::schedules::{self as db, OccurrenceRow, ScheduleRow};
use crate::schedules::{self, ScheduleError, ScheduleSpec, Timing};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, delete))
        .routes(routes!(pause))
        .routes(routes!(resume))
}

/// How many upcoming occurrences a schedule shows.
const UPCOMING: usize = 5;
/// How many handled occurrences a schedule shows.
const RECENT: i64 = 20;

/// A schedule.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Schedule)]
struct ScheduleView {
    id: String,
    cron: String,
    timezone: String,
    target: Value,
    missed: String,
    overlap: String,
    paused: bool,
    /// The next occurrences (none while paused).
    next_occurrences: Vec<chrono::DateTime<chrono::Utc>>,
    /// The latest handled occurrences (up to 20), newest first. Absent in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    occurrences: Option<Vec<OccurrenceView>>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// An occurrence the schedule handled.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ScheduleOccurrence)]
struct OccurrenceView {
    at: chrono::DateTime<chrono::Utc>,
    outcome: String,
    task_id: Option<String>,
    workflow_id: Option<String>,
    error: Option<String>,
    node: String,
    handled_at: chrono::DateTime<chrono::Utc>,
}

impl From<OccurrenceRow> for OccurrenceView {
    fn from(o: OccurrenceRow) -> Self {
        OccurrenceView {
            at: o.occurrence_at,
            outcome: o.outcome,
            task_id: o.task_id,
            workflow_id: o.workflow_id,
            error: o.error,
            node: o.node,
            handled_at: o.created_at,
        }
    }
}

impl ScheduleView {
    fn new(s: ScheduleRow) -> ScheduleView {
        let next_occurrences = match (s.paused, Timing::parse(&s.cron, &s.timezone)) {
            (false, Ok(timing)) => {
                let mut times = vec![s.next_at];
                times.extend(timing.upcoming(s.next_at, UPCOMING - 1));
                times
            }
            _ => Vec::new(),
        };
        ScheduleView {
            id: s.id,
            cron: s.cron,
            timezone: s.timezone,
            target: s.target.0,
            missed: s.missed,
            overlap: s.overlap,
            paused: s.paused,
            next_occurrences,
            occurrences: None,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

fn schedule_error(e: ScheduleError) -> ApiError {
    match e {
        ScheduleError::Invalid { code, message } => ApiError::bad_request(code, message),
        ScheduleError::Db(e) => e.into(),
    }
}

fn not_found(id: &str) -> impl Fn(DbError) -> ApiError + '_ {
    move |e| match e {
        DbError::NotFound => ApiError::not_found(format!("schedule {id:?}")),
        e => e.into(),
    }
}

async fn full_view(state: &AppState, tenant_id: &str, id: &str) -> Result<ScheduleView, ApiError> {
    let row = db::get(&state.db, tenant_id, id)
        .await
        .map_err(not_found(id))?;
    let occurrences = db::occurrences(&state.db, tenant_id, id, RECENT).await?;
    let mut view = ScheduleView::new(row);
    view.occurrences = Some(occurrences.into_iter().map(Into::into).collect());
    Ok(view)
}

/// Create a schedule
///
/// **Role:** developer.
///
/// A cron expression in a time zone, and what each occurrence enqueues: a task, or a
/// run of a stored workflow. Every node's ticker handles due occurrences; each is
/// handled exactly once across nodes. Recorded in the audit trail (`schedule.create`).
#[utoipa::path(
    post,
    path = "/schedules",
    operation_id = "createSchedule",
    tag = "schedules",
    request_body(content = ScheduleSpec, content_type = "application/json", description = ""),
    responses(
        (status = 201, description = "The schedule, with its next occurrences.", body = ScheduleView),
        (status = 400, description = "Codes: `invalid_schedule` (cron, time zone, target's shape), `unknown_agent`, `unknown_workflow`, the codes of an invalid stored workflow, `invalid_json`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(spec): ApiJson<ScheduleSpec>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    principal
        .require(&state, Role::Developer, "schedule.create", "schedule", None)
        .await?;
    let row = schedules::create(&state.invocations, &principal.actor(), &spec)
        .await
        .map_err(schedule_error)?;
    let mut view = ScheduleView::new(row);
    view.occurrences = Some(Vec::new());
    Ok((StatusCode::CREATED, Json(view)))
}

/// List schedules
///
/// **Role:** viewer.
///
/// The tenant's schedules, newest first.
#[utoipa::path(
    get,
    path = "/schedules",
    operation_id = "listSchedules",
    tag = "schedules",
    params(
        Page,
    ),
    responses(
        (status = 200, description = "A page of schedules.", body = Paged<ScheduleView>),
        (status = 400, response = responses::InvalidQuery),
    )
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Paged<ScheduleView>>, ApiError> {
    principal
        .require(&state, Role::Viewer, "schedule.list", "schedule", None)
        .await?;
    let limit = page.limit()?;
    let rows = db::list(
        &state.db,
        principal.tenant_id(),
        page.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let page = Paged::from_rows(rows, limit, |s| s.id.clone());
    Ok(Json(Paged {
        items: page.items.into_iter().map(ScheduleView::new).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Show a schedule
///
/// **Role:** viewer.
///
/// With its next occurrences and the latest handled (what each enqueued).
#[utoipa::path(
    get,
    path = "/schedules/{id}",
    operation_id = "getSchedule",
    tag = "schedules",
    params(
        ("id" = String, Path, description = "The schedule's id."),
    ),
    responses(
        (status = 200, description = "The schedule.", body = ScheduleView),
        (status = 400, response = responses::InvalidPath),
        (status = 404, description = "No schedule with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<ScheduleView>, ApiError> {
    principal
        .require(&state, Role::Viewer, "schedule.get", "schedule", Some(&id))
        .await?;
    Ok(Json(full_view(&state, principal.tenant_id(), &id).await?))
}

async fn set_paused(
    state: &AppState,
    principal: &Principal,
    id: &str,
    paused: bool,
) -> Result<Json<ScheduleView>, ApiError> {
    let action = if paused {
        "schedule.pause"
    } else {
        "schedule.resume"
    };
    principal
        .require(state, Role::Developer, action, "schedule", Some(id))
        .await?;
    let tenant_id = principal.tenant_id();
    let row = db::get(&state.db, tenant_id, id)
        .await
        .map_err(not_found(id))?;
    let now = state.quotas.clock().now();
    // Resuming starts from the next occurrence: those while paused are not run.
    let next_at = match (paused, Timing::parse(&row.cron, &row.timezone)) {
        (false, Ok(timing)) => timing.next_after(now),
        _ => None,
    };
    let mut tx = state.db.begin(tenant_id).await?;
    if !db::set_paused(&mut tx, tenant_id, id, paused, next_at, now).await? {
        return Err(ApiError::not_found(format!("schedule {id:?}")));
    }
    let mut event = principal.event(action, "schedule", Some(id));
    event.after = Some(DbJson(
        serde_json::json!({ "paused": paused, "next_at": next_at }),
    ));
    crate::db::audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(Json(full_view(state, tenant_id, id).await?))
}

/// Pause a schedule
///
/// **Role:** developer.
///
/// No occurrence is handled while it is paused. Recorded in the audit trail
/// (`schedule.pause`).
#[utoipa::path(
    post,
    path = "/schedules/{id}/pause",
    operation_id = "pauseSchedule",
    tag = "schedules",
    params(
        ("id" = String, Path, description = "The schedule's id."),
    ),
    responses(
        (status = 200, description = "The schedule.", body = ScheduleView),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No schedule with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &principal, &id, true).await
}

/// Resume a schedule
///
/// **Role:** developer.
///
/// It resumes from the first occurrence after now: those that came while it was paused
/// are not run. Recorded in the audit trail (`schedule.resume`).
#[utoipa::path(
    post,
    path = "/schedules/{id}/resume",
    operation_id = "resumeSchedule",
    tag = "schedules",
    params(
        ("id" = String, Path, description = "The schedule's id."),
    ),
    responses(
        (status = 200, description = "The schedule.", body = ScheduleView),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No schedule with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &principal, &id, false).await
}

/// Delete a schedule
///
/// **Role:** developer.
///
/// Deletes it and its record of occurrences; work already enqueued goes on. Recorded in
/// the audit trail (`schedule.delete`).
#[utoipa::path(
    delete,
    path = "/schedules/{id}",
    operation_id = "deleteSchedule",
    tag = "schedules",
    params(
        ("id" = String, Path, description = "The schedule's id."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No schedule with this id in the caller's tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<StatusCode, ApiError> {
    principal
        .require(
            &state,
            Role::Developer,
            "schedule.delete",
            "schedule",
            Some(&id),
        )
        .await?;
    let tenant_id = principal.tenant_id();
    let mut tx = state.db.begin(tenant_id).await?;
    if !db::delete(&mut tx, tenant_id, &id).await? {
        return Err(ApiError::not_found(format!("schedule {id:?}")));
    }
    let event = principal.event("schedule.delete", "schedule", Some(&id));
    crate::db::audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
