//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of this API, generated from the
//! code. Every route is registered with utoipa-axum's `routes!`, which takes its
//! operation from the handler's `#[utoipa::path]`, and every body is a type deriving
//! `ToSchema`: a route or a field cannot exist without being in the document.
//!
//! [`ApiDoc`] adds what is not any one handler's: the overview (`openapi.md`), the
//! tags, the API key scheme, and the responses every operation may give.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response};
use utoipa::{Modify, OpenApi, ToResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::AppState;
use crate::api::error::responses::{
    AgentNotFound, Forbidden, InvalidId, InvalidPath, InvalidPathOrQuery, InvalidQuery,
    OtherFailure, TenantNotFound, Unauthenticated,
};
use crate::runtime::Outcome;

/// What the document says beyond the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Corral control API", license(name = "Apache-2.0", identifier = "Apache-2.0")),
    servers((url = "http://127.0.0.1:8080", description = "`corral serve` with its default `CORRAL_LISTEN`")),
    security(("apiKey" = [])),
    tags(
        (name = "health"), (name = "meta"), (name = "agents"), (name = "versions"),
        (name = "invocations"), (name = "tasks"), (name = "executions"), (name = "audit"),
        (name = "costs"), (name = "usage"), (name = "kv"), (name = "tenants"), (name = "keys"),
        (name = "config"), (name = "workflows"), (name = "schedules"),
    ),
    components(
        responses(
            Unauthenticated, Forbidden, InvalidQuery, InvalidPath, InvalidPathOrQuery,
            InvalidId, AgentNotFound, TenantNotFound, OtherFailure,
        ),
        // Named by a query parameter only, which utoipa does not collect.
        schemas(Outcome),
    ),
)]
pub struct ApiDoc;

/// The overview, the API key scheme, and on every operation the responses any request
/// may get: `401` on each that needs a key (those without `security(())`), and
/// `default`. Applied to the whole document, once the routes' operations are in it.
pub struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info.description = Some(include_str!("openapi.md").trim_end().to_string());
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer <key>`. The first admin key is printed on first start (or set with `CORRAL_BOOTSTRAP_KEY`).",
                    ))
                    .build(),
            ),
        );
        let reference =
            |name: &str| RefOr::<Response>::Ref(utoipa::openapi::Ref::from_response_name(name));
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let public = operation.security.is_some();
                let responses = &mut operation.responses.responses;
                if !public {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| reference(&Unauthenticated::response().0));
                }
                responses
                    .entry("default".into())
                    .or_insert_with(|| reference(&OtherFailure::response().0));
            }
        }
    }
}

/// The operations of a path item.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document, as served: generated once, on first request.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    crate::api::openapi()
        .to_pretty_json()
        .expect("the document serializes")
});

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(document))
}

/// This document
///
/// The OpenAPI 3.1 description of this API, generated from the server's code. No
/// authentication.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "The document.", body = Object),
    )
)]
async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
