//! The web console at `/console`: server-rendered pages over the API, for operators.
//!
//! The console is an in-process client of the API. Every page and every form builds
//! the request a client would send — with the signed-in key as its bearer token — and
//! hands it to the API's own router ([`Console::call`]). Roles, validation, limits and
//! the audit trail are therefore the API's by construction: the console decides
//! nothing, renders the JSON answers, and shows a refusal's `{code, message}` in a page
//! with the API's status.
//!
//! - [`session`]: sign-in, the session cookie, CSRF and origin checks.
//! - One module per group of pages: [`agents`], [`executions`], [`reports`] (overview,
//!   costs, usage), [`records`] (audit trail, keys, tasks, workflows).
//! - [`templates`]: the HTML templates, embedded in the binary (no files at run time,
//!   no build step), escaped by default.
//!
//! Pages carry a strict `Content-Security-Policy` (no scripts at all, styles only from
//! `/console/console.css`) and `Cache-Control: no-store`.

mod agents;
mod executions;
mod records;
mod reports;
mod session;
mod templates;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use tower::ServiceExt;

use self::session::{Caller, Sessions};
use crate::api::AppState;

/// What the console needs from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleSettings {
    /// Mark the session cookie `Secure` even when the request did not say it came over
    /// TLS (`X-Forwarded-Proto: https` always does).
    pub secure_cookie: bool,
    /// Largest component upload (the multipart form may be a little larger).
    pub max_upload_bytes: usize,
    /// How long a page may take (an upload compiles within it).
    pub request_timeout: std::time::Duration,
}

/// The console's shared state: the API it calls, and its sessions.
#[derive(Clone)]
pub struct Console {
    api: Router,
    state: AppState,
    sessions: Sessions,
    settings: ConsoleSettings,
}

/// Adds the console's routes under `/console` to `api` (the whole API router).
pub fn mount(api: Router, state: AppState, settings: ConsoleSettings) -> Router {
    let console = Console {
        api: api.clone(),
        state,
        sessions: Sessions::new(),
        settings,
    };
    // A multipart upload is the component plus a few small fields.
    let body_limit = settings.max_upload_bytes + 64 * 1024;
    let pages = Router::new()
        .route("/console", get(reports::overview))
        .route("/console/console.css", get(templates::stylesheet))
        .route(
            "/console/sign-in",
            get(|| async { Redirect::to("/console") }).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/agents", get(agents::list).post(agents::create))
        .route("/console/agents/{name}", get(agents::show))
        .route("/console/agents/{name}/versions", post(agents::upload))
        .route(
            "/console/agents/{name}/versions/{version}/activate",
            post(agents::activate),
        )
        .route("/console/agents/{name}/pause", post(agents::pause))
        .route("/console/agents/{name}/resume", post(agents::resume))
        .route("/console/agents/{name}/policy", post(agents::update_policy))
        .route("/console/agents/{name}/invoke", post(agents::invoke))
        .route("/console/executions", get(executions::list))
        .route("/console/executions/{id}", get(executions::show))
        .route("/console/costs", get(reports::costs))
        .route("/console/usage", get(reports::usage))
        .route("/console/audit", get(records::audit))
        .route(
            "/console/keys",
            get(records::keys).post(records::create_key),
        )
        .route("/console/keys/{id}/revoke", post(records::revoke_key))
        .route("/console/tasks", get(records::tasks))
        .route("/console/tasks/{id}", get(records::task))
        .route("/console/workflows", get(records::workflows))
        .route("/console/workflows/{id}", get(records::workflow))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(protect))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .with_state(console);
    api.merge(pages)
}

/// Headers on every console response: no scripts, no framing, no caching of pages
/// that show an account's data.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// The API refused: its status, code and message, shown as they are.
    Refused {
        /// The API's status.
        status: StatusCode,
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
        /// Where "Back" goes.
        back: Option<String>,
    },
    /// No session, or its key stopped working: sign in (again).
    SignedOut(Option<&'static str>),
}

impl PageError {
    /// A refusal by the console itself (a malformed form), in the API's shape.
    pub fn invalid(code: &str, message: impl Into<String>) -> PageError {
        PageError::Refused {
            status: StatusCode::BAD_REQUEST,
            code: code.into(),
            message: message.into(),
            back: None,
        }
    }

    /// The same error, with a "Back" link to `url`.
    pub fn back(self, url: &str) -> PageError {
        match self {
            PageError::Refused {
                status,
                code,
                message,
                ..
            } => PageError::Refused {
                status,
                code,
                message,
                back: Some(url.into()),
            },
            other => other,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Refused {
                status,
                code,
                message,
                back,
            } => {
                let body = templates::render(
                    "error.html",
                    &serde_json::json!({
                        "title": status.canonical_reason().unwrap_or("Refused"),
                        "status": status.as_u16(),
                        "code": code,
                        "message": message,
                        "back": back,
                    }),
                );
                match body {
                    Ok(body) => (status, body).into_response(),
                    Err(failed) => failed,
                }
            }
            PageError::SignedOut(why) => {
                let to = match why {
                    Some(why) => format!("/console?signed_out={why}"),
                    None => "/console".into(),
                };
                (
                    [(header::SET_COOKIE, session::clear_cookie())],
                    Redirect::to(&to),
                )
                    .into_response()
            }
        }
    }
}

/// What a console handler returns.
pub type Page = Result<Response, PageError>;

/// A request body for the API.
pub enum ApiBody {
    /// No body.
    Empty,
    /// JSON.
    Json(Value),
    /// A component's bytes (`application/wasm`).
    Wasm(bytes::Bytes),
}

/// The most of an API answer the console reads (an execution with its logs and whole
/// output is well under this).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

impl Console {
    /// Sends `method uri` to the API as `caller`, and returns the JSON answer (`Null`
    /// when empty). A refusal is [`PageError::Refused`] with the API's own status, code
    /// and message; a key that no longer authenticates ends the session.
    pub async fn call(
        &self,
        caller: &Caller,
        method: Method,
        uri: &str,
        body: ApiBody,
    ) -> Result<Value, PageError> {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, caller.bearer());
        if let Some(agent) = &caller.forwarded.user_agent {
            request = request.header(header::USER_AGENT, agent);
        }
        let (request, body) = match body {
            ApiBody::Empty => (request, Body::empty()),
            ApiBody::Json(value) => (
                request.header(header::CONTENT_TYPE, "application/json"),
                Body::from(value.to_string()),
            ),
            ApiBody::Wasm(bytes) => (
                request
                    .header(header::CONTENT_TYPE, "application/wasm")
                    .header(header::CONTENT_LENGTH, bytes.len()),
                Body::from(bytes),
            ),
        };
        let mut request = request
            .body(body)
            .map_err(|e| PageError::invalid("invalid_request", e.to_string()))?;
        // The API audits and rate-limits by the browser's address, not the console's.
        if let Some(addr) = caller.forwarded.addr {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(addr));
        }
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|_| internal("the API's answer could not be read"))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| internal("the API's answer was not JSON"))?
        };
        if status.is_success() {
            return Ok(value);
        }
        if status == StatusCode::UNAUTHORIZED {
            self.sessions.end(&caller.session.id);
            return Err(PageError::SignedOut(Some("expired")));
        }
        let text = |field: &str| {
            value["error"][field]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        Err(PageError::Refused {
            status,
            code: text("code"),
            message: text("message"),
            back: None,
        })
    }

    /// `GET uri` as `caller`.
    pub async fn get(&self, caller: &Caller, uri: &str) -> Result<Value, PageError> {
        self.call(caller, Method::GET, uri, ApiBody::Empty).await
    }

    /// Renders `template` in the console's frame for `caller`, with `data` as `page`.
    pub fn render(&self, caller: &Caller, template: &str, section: &str, data: Value) -> Response {
        let flash = caller.session.take_flash();
        let context = serde_json::json!({
            "me": caller.session.who,
            "csrf": caller.session.csrf,
            "flash": flash,
            "section": section,
            "page": data,
        });
        match templates::render(template, &context) {
            Ok(page) => page.into_response(),
            Err(failed) => failed,
        }
    }

    /// After a change: back to `to` (`303`), with `note` shown once there.
    pub fn done(&self, caller: &Caller, to: &str, note: String) -> Response {
        caller.session.set_flash(note);
        Redirect::to(to).into_response()
    }
}

fn internal(message: &str) -> PageError {
    PageError::Refused {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal".into(),
        message: message.into(),
        back: None,
    }
}

/// `text` as one path segment: everything but unreserved characters percent-encoded.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `?a=1&b=2` from a query struct, leaving out empty fields; empty when all are.
pub fn query(params: &impl Serialize) -> String {
    let pairs: Vec<(String, String)> = serde_json::to_value(params)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::String(s) if !s.trim().is_empty() => Some((name, s.trim().to_string())),
            Value::Number(n) => Some((name, n.to_string())),
            Value::Bool(b) => Some((name, b.to_string())),
            _ => None,
        })
        .collect();
    if pairs.is_empty() {
        return String::new();
    }
    format!(
        "?{}",
        serde_urlencoded::to_string(pairs).expect("pairs of strings encode")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_cannot_leave_its_place_in_the_path() {
        assert_eq!(segment("text-stats"), "text-stats");
        assert_eq!(segment("../keys?x=1"), "..%2Fkeys%3Fx%3D1");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn a_query_leaves_out_empty_fields_and_encodes_the_rest() {
        #[derive(Serialize)]
        struct Q {
            agent: String,
            outcome: String,
            cursor: Option<String>,
        }
        let q = Q {
            agent: "a&b".into(),
            outcome: " ".into(),
            cursor: None,
        };
        assert_eq!(query(&q), "?agent=a%26b");
        let empty = Q {
            agent: String::new(),
            outcome: String::new(),
            cursor: None,
        };
        assert_eq!(query(&empty), "");
    }
}
