//! [`ApiError`]: every error response is `{"error": {"code", "message"}}` with a
//! stable `code` and the right status. Internal errors are logged with their cause
//! and answered with a fixed message: no SQL, paths or stack traces reach clients.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::db::DbError;
use crate::quota::Denial;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable machine-readable code.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `invalid_query`: the query parameter `name` is none of the `known` values.
    pub fn not_one_of<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Self {
        let known: Vec<&str> = known.into_iter().collect();
        Self::bad_request(
            "invalid_query",
            format!("{name} must be one of {}", known.join(", ")),
        )
    }

    /// 401 `unauthenticated`: no key, or a key that is unknown or revoked.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a valid API key as `Authorization: Bearer <key>`",
        )
    }

    /// 403 `forbidden`: the key's role does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`. Also for other tenants' resources, so existence is not revealed.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} was not found", what.into()),
        )
    }

    /// 409: the request conflicts with the current state; `code` says how.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 500 `internal`: logs `cause`, tells the client nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request; it has been logged",
        )
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
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
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
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
            DbError::Conflict(what) => ApiError::conflict("conflict", what),
            DbError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl From<crate::invocations::InvokeError> for ApiError {
    fn from(e: crate::invocations::InvokeError) -> Self {
        use crate::invocations::InvokeError;
        match e {
            e @ InvokeError::Paused { .. } => ApiError::conflict("agent_paused", e.to_string()),
            e @ InvokeError::NoActiveVersion { .. } => {
                ApiError::conflict("no_active_version", e.to_string())
            }
            e @ InvokeError::VersionNotFound { .. } => ApiError::not_found(e.to_string()),
            InvokeError::AgentDeleted { agent } => ApiError::not_found(format!("agent {agent:?}")),
            InvokeError::Input(refusal) => {
                let code = match refusal {
                    crate::runtime::InputRefusal::UnknownAction { .. } => "unknown_action",
                    crate::runtime::InputRefusal::Invalid { .. } => "invalid_input",
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
