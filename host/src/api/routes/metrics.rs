//! `GET /metrics`: this process's counters in the Prometheus text format, for keys of
//! the operator tenant (any role): they count every tenant's executions.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::responses;
use crate::api::extract::Principal;
use crate::api::{ApiError, AppState};
use crate::db::keys::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Counters for monitoring
///
/// This process's counters in the Prometheus text format: executions by outcome
/// (`host_failure` apart), what they were charged, model calls, tokens and cost,
/// compiles and cache hits. For keys of the operator tenant (any role).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "health",
    responses(
        (status = 200, description = "The counters.", body = String, content_type = "text/plain"),
        (status = 403, response = responses::Forbidden),
    )
)]
async fn metrics(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<impl IntoResponse, ApiError> {
    principal
        .require(&state, Role::Viewer, "metrics.get", "metrics", None)
        .await?;
    if !principal.is_operator {
        principal.deny(&state, "metrics.get", "metrics", None).await;
        return Err(ApiError::forbidden(
            "metrics are for keys of the operator tenant",
        ));
    }
    let body = state.metrics.render(state.runtime.cache_stats());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}
