//! The audit trail: list with filters (actor, action, resource, time range).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::parse_time;
use crate::api::extract::{ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::audit::{self, AuditEvent, AuditFilter};
use crate::db::keys::Role;

pub fn router() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    actor: Option<String>,
    action: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Paged<AuditEvent>>, ApiError> {
    principal
        .require(&state, Role::Viewer, "audit.list", "audit_event", None)
        .await?;
    let limit = Page {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    let filter = AuditFilter {
        actor_key_id: q.actor,
        action: q.action,
        resource_type: q.resource_type,
        resource_id: q.resource_id,
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
    };
    let rows = audit::list(
        &state.db,
        principal.tenant_id(),
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(Paged::from_rows(rows, limit, |e| e.id.clone())))
}
