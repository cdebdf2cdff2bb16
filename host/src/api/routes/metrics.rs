//! `GET /metrics`: this process's metrics in the Prometheus text format
//! ([`crate::metrics`]). On the main listener, for keys of the operator tenant (any
//! role): they count every tenant's executions. On the metrics listener
//! (`CORRAL_METRICS_LISTEN`), without a key: that address serves nothing else, and is
//! meant for a network only the scraper reaches.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::responses;
use crate::api::extract::Principal;
use crate::api::{ApiError, AppState};
use crate::db::keys::Role;
use crate::metrics::Scrape;

/// The Prometheus text format's media type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Metrics for monitoring
///
/// This process's metrics in the Prometheus text format (docs/API.md lists them):
/// executions by outcome, latencies, fuel and memory, quota refusals, capability use
/// and denials, model calls, compile cache, pools, group commits, tasks by state. For
/// keys of the operator tenant (any role).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "getMetrics",
    tag = "health",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain"),
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
    Ok(text(&state).await)
}

/// The metrics, with the states read now (tasks by state from a short cache).
pub async fn text(state: &AppState) -> impl IntoResponse + use<> {
    let metrics = &state.metrics;
    let tasks = match metrics.tasks.get(&()) {
        Some(tasks) => Some(tasks),
        None => match crate::db::tasks::count_by_state(&state.db).await {
            Ok(tasks) => {
                metrics.tasks.insert((), tasks.clone());
                Some(tasks)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not count tasks for /metrics");
                None
            }
        },
    };
    let scrape = Scrape {
        cache: state.runtime.cache_stats(),
        instances: state.runtime.instances(),
        db: state.db.pool_stats(),
        tasks,
    };
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        metrics.render(&scrape),
    )
}
