//! `/healthz` (the process is up) and `/readyz` (it can reach its database).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::api::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    if state.db.ping().await {
        Ok(axum::Json(
            json!({ "status": "ready", "database": state.db.backend() }),
        ))
    } else {
        Err(ApiError::unavailable("the database does not answer"))
    }
}
