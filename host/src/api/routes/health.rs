//! `/healthz` (the process is up) and `/readyz` (it can reach its database).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::ErrorBody;
use crate::api::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: &'static str,
}

/// The process can reach its database.
#[derive(Debug, Serialize, ToSchema)]
struct Ready {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    status: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(pattern = "^(sqlite|postgres)$")]
    database: &'static str,
}

/// Liveness
///
/// Answers while the process is up. No authentication.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "The process is up.", body = Health),
    )
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness
///
/// Answers `200` when the database answers, `503` otherwise. No authentication.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready to serve.", body = Ready),
        (status = 503, description = "The database does not answer. Codes: `unavailable`.", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.db.ping().await {
        Ok(Json(Ready {
            status: "ready",
            database: state.db.backend(),
        }))
    } else {
        Err(ApiError::unavailable("the database does not answer"))
    }
}
