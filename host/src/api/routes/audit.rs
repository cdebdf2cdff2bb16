//! The audit trail: list with filters (actor, action, resource, time range).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::parse_time;
use crate::api::error::responses;
use crate::api::extract::{ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::audit::{self, AuditEvent, AuditFilter};
use crate::db::keys::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only events by this API key id.
    actor: Option<String>,
    /// Only this action, e.g. `agent.create`.
    action: Option<String>,
    /// Only this resource type, e.g. `agent`.
    resource_type: Option<String>,
    /// Only this resource id.
    resource_id: Option<String>,
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

/// List audit events
///
/// **Role:** viewer.
///
/// The caller's tenant's audit trail, newest first: every change and every denial.
/// Filters combine; unknown parameters are `400`. `since`/`until` apply to
/// `occurred_at`.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "listAuditEvents",
    tag = "audit",
    params(
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of audit events.", body = Paged<AuditEvent>),
        (status = 400, response = responses::InvalidQuery),
    )
)]
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
