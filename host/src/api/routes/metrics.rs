//! `GET /metrics`: this process's counters in the Prometheus text format, for keys of
//! the operator tenant (any role): they count every tenant's executions.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::api::extract::Principal;
use crate::api::{ApiError, AppState};
use crate::db::keys::Role;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

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
