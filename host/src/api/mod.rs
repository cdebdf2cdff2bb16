//! The HTTP control API under `/v1`: JSON in and out, API-key authentication, roles,
//! tenant scoping, and an audit event for every change and every denial.
//!
//! Layers, outermost first: request id → tracing (a `request` span per request, under
//! the client's `traceparent`) → panic catcher → timeout → routes.
//! Each route module has a `router()`; [`router`] nests them.

pub mod auth_failures;
pub mod error;
pub mod extract;
mod routes;

use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderName, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use self::auth_failures::{AuthFailureSettings, AuthFailures};
use crate::cache::{self, TtlCache};
use crate::costs::PriceModel;
use crate::db::Db;
use crate::db::agents::{Agent, AgentVersion};
use crate::db::keys::ApiKey;
use crate::db::tenants::Tenant;
use crate::db::writer::ExecutionWriter;
use crate::invocations::{InvocationSettings, Invocations};
use crate::limits::Limits;
use crate::quota::Enforcer;
use crate::runtime::Runtime;
use crate::secrets::SecretsKey;

pub use self::error::{ApiError, ErrorCode};

/// What the API needs from the server's configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The host's limits: every invocation's defaults and ceiling.
    pub limits: Limits,
    /// Prices.
    pub prices: PriceModel,
    /// Largest accepted component upload.
    pub max_upload_bytes: usize,
    /// Largest accepted JSON body (and so invocation input).
    pub max_body_bytes: usize,
    /// How long a request may take before `408`.
    pub request_timeout: Duration,
    /// How deep calls between agents may go (a root's callees are at depth 1).
    pub max_call_depth: usize,
    /// The longest a task attempt may run.
    pub task_timeout: Duration,
    /// How long an idempotency key's reservation holds without renewal.
    pub idempotency_lease: Duration,
    /// How long an idempotency key lives.
    pub idempotency_ttl: Duration,
    /// The key that seals agents' secrets; `None` refuses secret writes.
    pub secrets_key: Option<SecretsKey>,
    /// The operator's models; `None` when none are configured.
    pub llm: Option<Arc<crate::llm::Catalogue>>,
    /// How failed authentication is limited and audited.
    pub auth_failures: AuthFailureSettings,
    /// Longest a client may pause while sending a request body.
    pub body_timeout: Duration,
    /// How long records are kept.
    pub retention: crate::invocations::RetentionSettings,
    /// Whether per-agent metrics carry the agent's name as a label.
    pub metrics_agent_labels: bool,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The sandbox.
    pub runtime: Arc<Runtime>,
    /// The group-commit writer for execution records.
    pub writer: ExecutionWriter,
    /// Settings.
    pub settings: Arc<ApiSettings>,
    /// Authenticated keys by secret hash, with whether their tenant is the operator.
    pub keys: Arc<TtlCache<String, (ApiKey, bool)>>,
    /// Live agents by (tenant id, name).
    pub agents: Arc<TtlCache<(String, String), Agent>>,
    /// Versions by (tenant id, agent id, id or semver); versions never change.
    pub versions: Arc<TtlCache<(String, String, String), AgentVersion>>,
    /// Tenants (with their policies) by id.
    pub tenants: Arc<TtlCache<String, Tenant>>,
    /// Quota enforcement.
    pub quotas: Arc<Enforcer>,
    /// The invocation pipeline (which shares the database, sandbox, writer, quotas
    /// and caches above).
    pub invocations: Invocations,
    /// Wakes this node's task workers when a task is submitted here.
    pub task_wake: Arc<tokio::sync::Notify>,
    /// Failed authentication per source: limited, and audited in aggregate.
    pub auth_failures: Arc<AuthFailures>,
    /// Counters for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl AppState {
    /// State over `db`, `runtime` and `writer`, with empty caches.
    pub fn new(
        db: Db,
        runtime: Arc<Runtime>,
        writer: ExecutionWriter,
        settings: ApiSettings,
        quotas: Enforcer,
    ) -> AppState {
        let failure_settings = settings.auth_failures;
        let invocations = Invocations::new(
            db.clone(),
            runtime.clone(),
            writer,
            InvocationSettings {
                limits: settings.limits,
                prices: settings.prices,
                max_call_depth: settings.max_call_depth,
                secrets_key: settings.secrets_key.clone(),
                llm: settings.llm.clone(),
                task_timeout: settings.task_timeout,
                idempotency_lease: settings.idempotency_lease,
                idempotency_ttl: settings.idempotency_ttl,
                retention: settings.retention,
                metrics_agent_labels: settings.metrics_agent_labels,
            },
            quotas,
        );
        AppState {
            db,
            runtime,
            // The pipeline's handle: it moves workflows on as it records their steps.
            writer: invocations.writer.clone(),
            settings: Arc::new(settings),
            keys: Arc::new(TtlCache::new(cache::TTL)),
            agents: invocations.agents.clone(),
            versions: invocations.versions.clone(),
            tenants: invocations.tenants.clone(),
            quotas: invocations.quotas.clone(),
            task_wake: invocations.task_wake.clone(),
            auth_failures: Arc::new(AuthFailures::new(failure_settings)),
            metrics: invocations.metrics.clone(),
            invocations,
        }
    }
}

impl AppState {
    /// Appends an audit event that goes with no other write — a denial — in the next
    /// group commit, and waits for it to be durable. Failing to record it is logged, not
    /// returned: the request is refused either way.
    pub async fn audit_alone(&self, event: crate::db::audit::AuditEvent) {
        self.invocations.audit_alone(event).await
    }

    /// A tenant, from the cache or the database.
    pub async fn tenant(&self, id: &str) -> Result<Tenant, ApiError> {
        Ok(self.invocations.tenant(id).await?)
    }
}

/// Every route, each with its OpenAPI operation.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(routes::openapi::ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::metrics::router())
        .merge(routes::openapi::router())
        .nest(
            "/v1",
            OpenApiRouter::new()
                .merge(routes::agents::router())
                .merge(routes::config::router())
                .merge(routes::versions::router())
                .merge(routes::invoke::router())
                .merge(routes::tasks::router())
                .merge(routes::workflows::router())
                .merge(routes::schedules::router())
                .merge(routes::executions::router())
                .merge(routes::usage::router())
                .merge(routes::audit::router())
                .merge(routes::costs::router())
                .merge(routes::tenants::router())
                .merge(routes::keys::router())
                .merge(routes::kv::router()),
        )
}

/// The OpenAPI document of the whole API, generated from its routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api_routes().into_openapi();
    utoipa::Modify::modify(&routes::openapi::Conventions, &mut document);
    document
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let timeout = state.settings.request_timeout;
    // For the JSON extractors only: uploads read the raw body, which this does not
    // limit, under `max_upload_bytes` of their own.
    let body_limit = state.settings.max_body_bytes;
    let (routes, _) = api_routes().split_for_parts();
    routes
        .fallback(|| async { ApiError::not_found("this route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.settings.body_timeout,
        ))
        .layer(axum::middleware::from_fn(extract::refuse_nul_in_uri))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(record_status),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::internal("a handler panicked").into_response()
                }))
                .layer(HandleErrorLayer::new(
                    move |_: tower::BoxError| async move {
                        ApiError::new(
                            StatusCode::REQUEST_TIMEOUT,
                            ErrorCode::RequestTimeout,
                            format!("the request took longer than {timeout:?}"),
                        )
                    },
                ))
                .layer(TimeoutLayer::new(timeout)),
        )
        .with_state(state)
}

/// The metrics listener's whole API: `GET /metrics` without a key (see
/// `CORRAL_METRICS_LISTEN`); every other path is `404`.
pub fn metrics_router(state: AppState) -> Router {
    // Not an operation of the API (its document lists the keyed `GET /metrics`).
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    routes::metrics::text(&state).await
                },
            ),
        )
        .fallback(|| async { ApiError::not_found("this route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this route does not take that method",
            )
        })
        .with_state(state)
}

/// The span of one request, named by its route; its parent is the client's span when
/// the request carries a valid `traceparent` (and traces are exported).
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str());
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = request.uri().path(),
        request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) = crate::telemetry::context::extract(request.headers()) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(crate::telemetry::context::remote(&parent));
    }
    span
}

fn record_status<B>(response: &axum::http::Response<B>, _latency: Duration, span: &tracing::Span) {
    span.record("http.response.status_code", response.status().as_u16());
}

/// `?limit=&cursor=` for every list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page, 1 to 200 (default 50). Outside that range: `400 invalid_query`.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Page {
    /// The limit, checked.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("limit must be between 1 and 200, not {n}"),
            )),
        }
    }
}

/// A page of results. `next_cursor` is absent on the last page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Paged<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Paged<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says more exist.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> String) -> Paged<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(&id) } else { None };
        Paged {
            items: rows,
            next_cursor,
        }
    }
}
