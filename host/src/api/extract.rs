//! Extractors whose rejections use our error body: [`ApiJson`], [`ApiQuery`], [`ApiPath`],
//! and the authenticated [`Principal`] with the request's [`RequestMeta`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::auth_failures::Failure;
use super::error::{ApiError, ErrorCode};
use crate::db::audit::AuditEvent;
use crate::db::keys::{self, ApiKey, Role};
use crate::db::{self, agents};

/// JSON body; malformed JSON is `400 invalid_json`, a wrong content type `415`, text
/// with a NUL character (which no column can hold) `400 invalid_text`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(body_error)?;
        if has_nul_escape(&bytes) {
            return Err(nul_refused("the request body"));
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| ApiJson(value))
            .map_err(|rejection| {
                ApiError::bad_request(ErrorCode::InvalidJson, rejection.body_text())
            })
    }
}

/// Why a body could not be read: too large (`413`), or the client stalled or went
/// away while sending it (`408`).
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the request body is too large",
            )
        }
        _ => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BodyTimeout,
            "the request body was not sent in time",
        ),
    }
}

/// `application/json`, or any `application/…+json`, as axum's own extractor accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(essence) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether JSON text has a `\u0000` escape — the only way JSON can carry a NUL — that
/// is not itself an escaped backslash followed by `u0000`.
fn has_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// `400 invalid_text` for a NUL character in `place`.
pub fn nul_refused(place: &str) -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidText,
        format!(
            "{place} contains the NUL character (U+0000), which Corral does not accept in text"
        ),
    )
}

/// Refuses, before routing, a path or query string that carries a NUL (`%00`).
pub async fn refuse_nul_in_uri(
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    let has_nul = |text: &str| {
        text.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    if has_nul(uri.path()) {
        return nul_refused("the path").into_response();
    }
    if uri.query().is_some_and(has_nul) {
        return nul_refused("the query string").into_response();
    }
    next.run(request).await
}

/// Query string; bad parameters are `400 invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// Path parameters; a segment that is not valid UTF-8 (or will not parse) is
/// `400 invalid_path` rather than axum's plain-text rejection.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPath, e.body_text()))
    }
}

/// A resource id in the path (a UUID, as every id Corral makes): anything else is
/// `400 invalid_id` rather than a lookup that cannot succeed.
pub struct ApiId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiPath(id) = ApiPath::<String>::from_request_parts(parts, state).await?;
        if uuid::Uuid::try_parse(&id).is_err() {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidId,
                format!("{:?} is not an id (ids are UUIDs)", truncated(&id, 64)),
            ));
        }
        Ok(ApiId(id))
    }
}

/// At most `max` bytes of `text`, cut at a character boundary: what is copied from a
/// request into a record or a message.
pub fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Bytes of a request's user agent or path kept in the audit trail.
pub const MAX_AUDITED_TEXT: usize = 256;

/// Who sent a request, from where: the context of every audit event.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// `x-request-id` (set by the server if the client sent none).
    pub request_id: Option<String>,
    /// The peer address.
    pub client_addr: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// `traceparent` (and `tracestate`), when valid.
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

impl RequestMeta {
    fn from_parts(parts: &Parts) -> Self {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        RequestMeta {
            request_id: header("x-request-id"),
            client_addr: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
            user_agent: header("user-agent").map(|ua| truncated(&ua, MAX_AUDITED_TEXT).to_string()),
            trace: crate::telemetry::context::extract(&parts.headers),
        }
    }
}

/// The authenticated caller: an API key of one tenant, with its role.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key.
    pub key: ApiKey,
    /// Whether the key's tenant is the operator tenant.
    pub is_operator: bool,
    /// The request's context.
    pub meta: RequestMeta,
}

impl Principal {
    /// The caller's tenant.
    pub fn tenant_id(&self) -> &str {
        &self.key.tenant_id
    }

    /// This caller as the invocation pipeline records it.
    pub fn actor(&self) -> crate::invocations::Actor {
        crate::invocations::Actor {
            tenant_id: self.key.tenant_id.clone(),
            key_id: Some(self.key.id.clone()),
            request_id: self.meta.request_id.clone(),
            client_addr: self.meta.client_addr.clone(),
            user_agent: self.meta.user_agent.clone(),
            trace: self.meta.trace.clone(),
        }
    }

    /// An audit event by this caller, to be completed by the handler.
    pub fn event(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: Option<&str>,
    ) -> AuditEvent {
        self.actor().event(action, resource_type, resource_id)
    }

    /// Allows the request if the key has at least `role`; otherwise records the denial
    /// and refuses with `403 forbidden`.
    pub async fn require(
        &self,
        state: &AppState,
        role: Role,
        action: &str,
        resource_type: &str,
        resource_id: Option<&str>,
    ) -> Result<(), ApiError> {
        if self.key.role() >= role {
            return Ok(());
        }
        self.deny(state, action, resource_type, resource_id).await;
        Err(self.lacks(role, action))
    }

    /// [`require`](Self::require) for an action on the agent called `name`: a denial
    /// names the agent by id, like every other event about it, when it exists.
    pub async fn require_on_agent(
        &self,
        state: &AppState,
        role: Role,
        action: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.key.role() >= role {
            return Ok(());
        }
        let id = agents::by_name(&state.db, self.tenant_id(), name)
            .await
            .ok()
            .map(|agent| agent.id);
        let mut event = self.event(action, "agent", id.as_deref());
        event.result = "denied".into();
        event.after = Some(sqlx::types::Json(serde_json::json!({ "name": name })));
        state.audit_alone(event).await;
        Err(self.lacks(role, action))
    }

    fn lacks(&self, role: Role, action: &str) -> ApiError {
        ApiError::forbidden(format!(
            "{action} needs the {} role; this key is a {}",
            role.as_str(),
            self.key.role
        ))
    }

    /// Records a denied attempt.
    pub async fn deny(
        &self,
        state: &AppState,
        action: &str,
        resource_type: &str,
        resource_id: Option<&str>,
    ) {
        let mut event = self.event(action, resource_type, resource_id);
        event.result = "denied".into();
        state.audit_alone(event).await;
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::from_parts(parts);
        let path = original_path(parts);
        let source = meta.client_addr.clone().unwrap_or_default();
        let failure = |key_prefix: Option<String>| {
            let meta = meta.clone();
            let (path, source) = (path.clone(), source.clone());
            move |refused: bool| {
                state.auth_failures.record(
                    &Failure {
                        source: &source,
                        path: &path,
                        user_agent: meta.user_agent.as_deref(),
                        request_id: meta.request_id.as_deref(),
                        key_prefix: key_prefix.as_deref(),
                    },
                    refused,
                    db::now(),
                )
            }
        };
        if parts.headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
            failure(None)(false);
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthenticated,
                "send exactly one `Authorization: Bearer <key>` header",
            ));
        }
        // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` is `Bearer`.
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, secret)| secret.trim());
        let hash = secret.filter(|s| !s.is_empty()).map(keys::hash_secret);
        let cached = hash.as_ref().and_then(|hash| state.keys.get(hash));
        let prefix = secret.map(keys::prefix_of);
        let (mut key, is_operator) = match (cached, &hash) {
            (Some(entry), _) => entry,
            (None, hash) => {
                // A source whose failures drained its bucket is not looked up at all.
                if let Err(wait) = state.auth_failures.check(&source) {
                    failure(prefix)(true);
                    return Err(ApiError {
                        retry_after: Some(wait),
                        ..ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            ErrorCode::TooManyAuthFailures,
                            "too many requests from this address failed to authenticate; wait and retry with a valid key",
                        )
                    });
                }
                let found = match hash {
                    Some(hash) => keys::authenticate_hash(&state.db, hash).await?,
                    None => None,
                };
                match found {
                    Some(key) => {
                        let is_operator = state.tenant(&key.tenant_id).await?.is_operator;
                        (key, is_operator)
                    }
                    None => {
                        failure(prefix)(false);
                        return Err(ApiError::unauthenticated());
                    }
                }
            }
        };
        match keys::touch(&state.db, &key).await {
            Ok(true) => key.last_used_at = Some(db::now()),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record key use"),
        }
        if let Some(hash) = hash {
            state.keys.insert(hash, (key.clone(), is_operator));
        }
        Ok(Principal {
            key,
            is_operator,
            meta,
        })
    }
}

/// The path the client asked for, before nesting stripped any prefix (bounded).
fn original_path(parts: &Parts) -> String {
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or_else(|| parts.uri.path(), |OriginalUri(uri)| uri.path());
    truncated(path, MAX_AUDITED_TEXT).to_string()
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn a_nul_escape_is_found_but_an_escaped_backslash_before_u0000_is_not() {
        assert!(has_nul_escape(br#"{"a": "x\u0000"}"#));
        assert!(has_nul_escape(br#"{"a\u0000": 1}"#));
        assert!(!has_nul_escape(br#"{"a": "x\\u0000"}"#));
        assert!(has_nul_escape(br#"{"a": "x\\\u0000"}"#));
        assert!(has_nul_escape(br#"{"a": "\u00001"}"#));
        assert!(!has_nul_escape(br#"{"a": "\u0001"}"#));
        assert!(!has_nul_escape(br#"{"a": "trailing\"#));
    }
}
