//! [`ApiError`]: every error response is `{"error": {"code", "message"}}` with a
//! stable [`ErrorCode`] and the right status. Internal errors are logged with their
//! cause and answered with a fixed message: no SQL, paths or stack traces reach clients.
//!
//! The codes are one enum, so the OpenAPI document lists every one a client can get.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{ToResponse, ToSchema};

use crate::db::DbError;
use crate::quota::Denial;

/// Declares [`ErrorCode`] and its strings once: the enum, its `as_str` and its list.
macro_rules! error_codes {
    ($($(#[doc = $doc:tt])* $variant:ident = $code:tt,)*) => {
        /// The stable, machine-readable code of an error response. Clients match on
        /// these strings; they never change.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $code)] $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients see it, e.g. `not_found`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not JSON, lacks a field, has an unknown one or a wrong type.
    InvalidJson = "invalid_json",
    /// A query parameter is malformed, out of range or unknown.
    InvalidQuery = "invalid_query",
    /// An id in the path is not a UUID.
    InvalidId = "invalid_id",
    /// An upload has no bytes.
    EmptyBody = "empty_body",
    /// The client paused longer than `CORRAL_BODY_TIMEOUT` while sending the body.
    BodyTimeout = "body_timeout",
    /// A path parameter is not valid UTF-8 once percent-decoded.
    InvalidPath = "invalid_path",
    /// The path, query string or JSON body contains the NUL character (U+0000).
    InvalidText = "invalid_text",
    /// An agent, tenant or key name breaks its rules.
    InvalidName = "invalid_name",
    /// A policy value is zero, out of range or above its ceiling, or a grant is unusable.
    InvalidPolicy = "invalid_policy",
    /// A config name breaks its rules, a value is too long, or there are too many.
    InvalidConfig = "invalid_config",
    /// A secret name breaks its rules, or its value is empty or too long.
    InvalidSecret = "invalid_secret",
    /// The agent does not describe this action.
    UnknownAction = "unknown_action",
    /// The input does not satisfy the action's published input schema.
    InvalidInput = "invalid_input",
    /// An invocation's or task's limit is zero or above the agent's.
    InvalidLimits = "invalid_limits",
    /// A task field is missing or out of range, or a batch is malformed.
    InvalidTasks = "invalid_tasks",
    /// `depends_on` names an id that is not a task of the tenant.
    InvalidDependency = "invalid_dependency",
    /// A batch's `depends_on` form a cycle.
    DependencyCycle = "dependency_cycle",
    /// A workflow's steps or names are malformed.
    InvalidWorkflow = "invalid_workflow",
    /// A step's `depends_on` names no step of the workflow.
    UnknownStep = "unknown_step",
    /// A workflow's `depends_on` form a cycle.
    WorkflowCycle = "workflow_cycle",
    /// A path is malformed, or reads a step the step does not depend on.
    InvalidReference = "invalid_reference",
    /// A step's `when` does not parse.
    InvalidCondition = "invalid_condition",
    /// A workflow step, compensation or schedule names no live agent of the tenant.
    UnknownAgent = "unknown_agent",
    /// A schedule's cron expression, time zone or target is malformed.
    InvalidSchedule = "invalid_schedule",
    /// A schedule's target names no stored workflow definition (or version).
    UnknownWorkflow = "unknown_workflow",
    /// A key-value key in the path is too long.
    InvalidKey = "invalid_key",
    /// `Idempotency-Key` is empty, too long or not visible ASCII.
    InvalidIdempotencyKey = "invalid_idempotency_key",
    /// Too many requests from this address failed to authenticate.
    TooManyAuthFailures = "too_many_auth_failures",
    /// No key, or an unknown or revoked one.
    Unauthenticated = "unauthenticated",
    /// The key's role (or tenant) does not allow this.
    Forbidden = "forbidden",
    /// No such resource in the tenant, or no such route.
    NotFound = "not_found",
    /// The path exists, the method does not.
    MethodNotAllowed = "method_not_allowed",
    /// The request took longer than `CORRAL_REQUEST_TIMEOUT`.
    RequestTimeout = "request_timeout",
    /// A write collided with another at the same moment; retry.
    Conflict = "conflict",
    /// A live agent has this name.
    AgentExists = "agent_exists",
    /// The agent has another component with this version.
    VersionExists = "version_exists",
    /// A tenant has this name.
    TenantExists = "tenant_exists",
    /// The agent is paused.
    AgentPaused = "agent_paused",
    /// The agent has no version to run.
    NoActiveVersion = "no_active_version",
    /// A request with this `Idempotency-Key` is still running.
    IdempotencyInProgress = "idempotency_in_progress",
    /// The task to cancel has already ended.
    TaskFinished = "task_finished",
    /// The workflow to cancel is no longer running.
    WorkflowFinished = "workflow_finished",
    /// Another version of the workflow definition is being stored; retry.
    DefinitionInProgress = "definition_in_progress",
    /// The request would pass a plan cap of the tenant.
    PlanLimitReached = "plan_limit_reached",
    /// The server has no secrets key, so it stores no secrets.
    SecretsDisabled = "secrets_disabled",
    /// The agent already has as many secrets as it may.
    TooManySecrets = "too_many_secrets",
    /// The body is over the server's limit.
    PayloadTooLarge = "payload_too_large",
    /// The uploaded component is over the tenant plan's `max_component_bytes`.
    ComponentTooLarge = "component_too_large",
    /// JSON not sent as `application/json`, or a component not as `application/wasm`.
    UnsupportedMediaType = "unsupported_media_type",
    /// The upload is not a WebAssembly component.
    NotAComponent = "not_a_component",
    /// The upload is not well-formed WebAssembly.
    MalformedComponent = "malformed_component",
    /// The component does not validate.
    InvalidComponent = "invalid_component",
    /// The component is beyond the host's bounds on size and structure.
    ComponentTooComplex = "component_too_complex",
    /// Compiling the component took too long or too much.
    CompileLimitExceeded = "compile_limit_exceeded",
    /// The component imports something the host does not provide.
    UnsupportedImport = "unsupported_import",
    /// The component does not target Corral's agent world.
    WrongWorld = "wrong_world",
    /// The component's `describe` failed.
    DescribeFailed = "describe_failed",
    /// The component's `describe` returned unusable metadata.
    BadMetadata = "bad_metadata",
    /// The `Idempotency-Key` was used for a different request.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// The agent's or tenant's rate quota is used up.
    RateLimited = "rate_limited",
    /// The agent's or tenant's `max_concurrency` invocations are running.
    ConcurrencyLimited = "concurrency_limited",
    /// A budget of the agent or tenant is spent.
    BudgetExhausted = "budget_exhausted",
    /// The tenant's waiting tasks are at its plan's cap.
    QueueFull = "queue_full",
    /// The server failed; the cause is logged, not returned.
    Internal = "internal",
    /// The database does not answer, or the server is shutting down.
    Unavailable = "unavailable",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error response. `code` is stable and machine-readable; `message` is for
/// people and may change. Internal errors get a fixed message: causes are logged,
/// never returned.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
struct ErrorDetail {
    code: ErrorCode,
    message: String,
}

/// The error responses many operations share, named once in the document.
pub mod responses {
    use super::*;

    /// No `Authorization: Bearer <key>` header, or a key that is unknown or revoked.
    /// The attempt is recorded in the operator tenant's audit trail. Codes:
    /// `unauthenticated`, `too_many_auth_failures` (429).
    #[derive(ToResponse)]
    pub struct Unauthenticated(pub ErrorBody);

    /// The key's role does not allow this. The attempt is recorded in the audit trail
    /// with result `denied`. Codes: `forbidden`.
    #[derive(ToResponse)]
    pub struct Forbidden(pub ErrorBody);

    /// A query parameter is malformed, out of range or unknown. Codes: `invalid_query`.
    #[derive(ToResponse)]
    pub struct InvalidQuery(pub ErrorBody);

    /// A path parameter is not valid UTF-8 once percent-decoded. Codes: `invalid_path`.
    #[derive(ToResponse)]
    pub struct InvalidPath(pub ErrorBody);

    /// A path parameter is not valid UTF-8 once percent-decoded (`invalid_path`), or a
    /// query parameter is malformed, out of range or unknown (`invalid_query`). Codes:
    /// `invalid_path`, `invalid_query`.
    #[derive(ToResponse)]
    pub struct InvalidPathOrQuery(pub ErrorBody);

    /// An id in the path is not a UUID. Codes: `invalid_id`.
    #[derive(ToResponse)]
    pub struct InvalidId(pub ErrorBody);

    /// No live agent of this name in the caller's tenant. Codes: `not_found`.
    #[derive(ToResponse)]
    pub struct AgentNotFound(pub ErrorBody);

    /// No tenant with this id. A key of another tenant (not the operator's) also gets
    /// this for an existing tenant, whose existence stays hidden. Codes: `not_found`.
    #[derive(ToResponse)]
    pub struct TenantNotFound(pub ErrorBody);

    /// Any other failure: `400 invalid_text` when the path, query string or JSON body
    /// contains the NUL character; `405 method_not_allowed` for a method the path does
    /// not take; `408` when the request takes longer than `CORRAL_REQUEST_TIMEOUT`
    /// (`request_timeout`) or the client pauses while sending its body
    /// (`body_timeout`); `409 conflict` when a write collides with another at the same
    /// moment (retry); `500 internal` when the server fails (the cause is logged, not
    /// returned). Codes: `invalid_text`, `method_not_allowed`, `request_timeout`,
    /// `body_timeout`, `conflict`, `internal`.
    #[derive(ToResponse)]
    pub struct OtherFailure(pub ErrorBody);
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: a quota refused the request; `Retry-After` says when trying again may help.
    pub fn quota(denial: &Denial) -> Self {
        ApiError {
            retry_after: Some(denial.retry_after()),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                denial.code(),
                denial.message(),
            )
        }
    }

    /// 400: the request is malformed or invalid; `code` says how.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `invalid_query`: the query parameter `name` is none of the `known` values.
    pub fn not_one_of<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        let known: Vec<&str> = known.into_iter().collect();
        Self::bad_request(
            ErrorCode::InvalidQuery,
            format!("{name} must be one of {}", known.join(", ")),
        )
    }

    /// 401 `unauthenticated`: no key, or a key that is unknown or revoked.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "send a valid API key as `Authorization: Bearer <key>`",
        )
    }

    /// 403 `forbidden`: the key's role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 404 `not_found`. Also for other tenants' resources, so existence is not revealed.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{} was not found", what.into()),
        )
    }

    /// 409: the request conflicts with the current state; `code` says how.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 500 `internal`: logs `cause`, tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "the server failed to handle this request; it has been logged",
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::not_found("the resource"),
            DbError::Conflict(what) => ApiError::conflict(ErrorCode::Conflict, what),
            DbError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl From<crate::invocations::InvokeError> for ApiError {
    fn from(e: crate::invocations::InvokeError) -> Self {
        use crate::invocations::InvokeError;
        match e {
            e @ InvokeError::Paused { .. } => {
                ApiError::conflict(ErrorCode::AgentPaused, e.to_string())
            }
            e @ InvokeError::NoActiveVersion { .. } => {
                ApiError::conflict(ErrorCode::NoActiveVersion, e.to_string())
            }
            e @ InvokeError::VersionNotFound { .. } => ApiError::not_found(e.to_string()),
            InvokeError::AgentDeleted { agent } => ApiError::not_found(format!("agent {agent:?}")),
            InvokeError::Input(refusal) => {
                let code = match refusal {
                    crate::runtime::InputRefusal::UnknownAction { .. } => ErrorCode::UnknownAction,
                    crate::runtime::InputRefusal::Invalid { .. } => ErrorCode::InvalidInput,
                };
                ApiError::bad_request(code, refusal.to_string())
            }
            InvokeError::Quota(denial) => ApiError::quota(&denial),
            InvokeError::ShuttingDown => ApiError::unavailable("the server is shutting down"),
            InvokeError::Host(e) => ApiError::internal(e),
            InvokeError::Db(e) => ApiError::internal(e),
        }
    }
}
