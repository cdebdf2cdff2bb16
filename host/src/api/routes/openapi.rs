//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of this API. It is a file
//! (`host/openapi.json`) kept true by a test that checks every documented operation
//! against the router and every route against the document.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::api::AppState;

/// The document.
pub const OPENAPI: &str = include_str!("../../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(document))
}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
