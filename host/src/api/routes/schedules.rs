//! Schedules: create, list, read (with the next occurrences and the latest handled),
//! pause, resume, delete. The tickers are in [`crate::schedules`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json as DbJson;

use crate::api::extract::{ApiId, ApiJson, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::DbError;
use crate::db::keys::Role;
use crate::db::schedules::{self as db, OccurrenceRow, ScheduleRow};
use crate::schedules::{self, ScheduleError, ScheduleSpec, Timing};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/schedules", post(create).get(list))
        .route("/schedules/{id}", get(show).delete(delete))
        .route("/schedules/{id}/pause", post(pause))
        .route("/schedules/{id}/resume", post(resume))
}

/// How many upcoming occurrences a schedule shows.
const UPCOMING: usize = 5;
/// How many handled occurrences a schedule shows.
const RECENT: i64 = 20;

#[derive(Debug, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    occurrences: Option<Vec<OccurrenceView>>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize)]
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

async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &principal, &id, true).await
}

async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(&state, &principal, &id, false).await
}

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
