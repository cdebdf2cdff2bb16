//! Signing in to the console, and what protects a signed-in session.
//!
//! - **Sign-in** takes an API key, checks it with the API's own authentication
//!   ([`Principal`]: the same failure limits and the same audit of failures), and
//!   starts a session in this server's memory. The key never goes back to the browser.
//! - **The cookie** `corral_console` holds only the session's random id (32 bytes): it
//!   is `HttpOnly`, `SameSite=Strict`, `Path=/console`, and `Secure` when the request
//!   came over TLS (`X-Forwarded-Proto: https`) or the server is told it always does.
//!   Sessions end at sign-out, after [`IDLE`] without a request, when their key stops
//!   authenticating, and when the server restarts (sign in again).
//! - **CSRF**: every form carries the session's token in a hidden field, compared in
//!   constant time on every `POST`; a `POST` whose `Origin` (or `Sec-Fetch-Site`) says
//!   it came from another site is refused before that. `SameSite=Strict` means a
//!   cross-site request carries no session in the first place.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Console, PageError, templates};
use crate::api::extract::Principal;

/// The session cookie's name.
pub const COOKIE: &str = "corral_console";

/// How long a session lasts without a request.
pub const IDLE: Duration = Duration::from_secs(8 * 60 * 60);

/// Most sessions held at once (the least recently used go first).
const MAX_SESSIONS: u64 = 10_000;

/// Who a session acts as: its key, as the API authenticated it.
#[derive(Debug, Clone, Serialize)]
pub struct Who {
    /// The key's id.
    pub key_id: String,
    /// The key's name.
    pub name: String,
    /// `viewer`, `developer` or `admin`.
    pub role: String,
    /// The key's tenant.
    pub tenant_id: String,
    /// Whether that tenant is the operator.
    pub operator: bool,
}

/// A signed-in browser.
pub struct Session {
    /// The cookie's value.
    pub id: String,
    /// The API key (never sent to the browser).
    secret: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Who it acts as.
    pub who: Who,
    /// A note to show once, on the next page.
    flash: Mutex<Option<String>>,
}

impl Session {
    /// The note for this page, if any (shown once).
    pub fn take_flash(&self) -> Option<String> {
        self.flash.lock().expect("flash lock").take()
    }

    /// Shows `note` on the next page.
    pub fn set_flash(&self, note: String) {
        *self.flash.lock().expect("flash lock") = Some(note);
    }
}

/// The sessions of this server, bounded in number and idle time.
#[derive(Clone)]
pub struct Sessions(moka::sync::Cache<String, Arc<Session>>);

impl Sessions {
    /// No sessions yet.
    pub fn new() -> Sessions {
        Sessions(
            moka::sync::Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_idle(IDLE)
                .build(),
        )
    }

    fn start(&self, secret: String, who: Who) -> Arc<Session> {
        let session = Arc::new(Session {
            id: random_token(),
            secret,
            csrf: random_token(),
            who,
            flash: Mutex::new(None),
        });
        self.0.insert(session.id.clone(), session.clone());
        session
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.0.invalidate(id);
    }
}

/// 32 random bytes, URL-safe base64.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The browser's side of a request, passed on to the API for its audit trail and
/// failure limits.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// The peer address.
    pub addr: Option<SocketAddr>,
    /// The `User-Agent` header.
    pub user_agent: Option<HeaderValue>,
}

impl Forwarded {
    fn from_parts(parts: &Parts) -> Forwarded {
        Forwarded {
            addr: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| *addr),
            user_agent: parts.headers.get(header::USER_AGENT).cloned(),
        }
    }
}

/// A signed-in request: its session and where it came from. Without a session, a page
/// answers with the sign-in form.
pub struct Caller {
    /// The session.
    pub session: Arc<Session>,
    /// The browser's address and user agent.
    pub forwarded: Forwarded,
}

impl Caller {
    /// The `Authorization` header of this caller's API requests.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.session.secret)
    }
}

impl FromRequestParts<Console> for Caller {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, PageError> {
        let session = cookie(&parts.headers)
            .and_then(|id| console.sessions.0.get(&id))
            .ok_or(PageError::SignedOut(None))?;
        Ok(Caller {
            session,
            forwarded: Forwarded::from_parts(parts),
        })
    }
}

/// The session id in the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Whether a `POST` came from the console's own pages, as far as the browser says:
/// its `Origin` names this host, or (without one) `Sec-Fetch-Site` says same-origin.
/// A client that sends neither is not a browser, and still needs the CSRF token.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(origin) = text(header::ORIGIN) {
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        return authority.is_some() && authority == text(header::HOST);
    }
    match text(HeaderName::from_static("sec-fetch-site")) {
        Some(site) => site == "same-origin",
        None => true,
    }
}

/// `403` for a form that did not come from this session's pages.
fn forged() -> PageError {
    PageError::Refused {
        status: StatusCode::FORBIDDEN,
        code: "csrf_failed".into(),
        message: "this form did not come from this session's pages (its origin or CSRF token \
                  is wrong); reload the page and try again"
            .into(),
        back: None,
    }
}

/// Whether two strings are equal, in time that depends only on their lengths.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Caller {
    /// Refuses a `POST` from another origin or without this session's CSRF token.
    pub fn check_post(&self, headers: &HeaderMap, token: Option<&str>) -> Result<(), PageError> {
        if !same_origin(headers) {
            return Err(forged());
        }
        match token {
            Some(token) if same_token(token, &self.session.csrf) => Ok(()),
            _ => Err(forged()),
        }
    }
}

/// A checked form `POST`: the caller, and the fields as `T` (the `csrf` field checked
/// and set aside).
pub struct Posted<T>(pub Caller, pub T);

impl<T: DeserializeOwned> FromRequest<Console> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, console: &Console) -> Result<Self, PageError> {
        let (mut parts, body) = request.into_parts();
        let caller = Caller::from_request_parts(&mut parts, console).await?;
        let bytes = axum::body::to_bytes(body, 1024 * 1024)
            .await
            .map_err(|_| PageError::invalid("invalid_form", "the form is too large"))?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| PageError::invalid("invalid_form", e.to_string()))?;
        let token = fields
            .iter()
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.as_str());
        caller.check_post(&parts.headers, token)?;
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| PageError::invalid("invalid_form", e.to_string()))?;
        Ok(Posted(caller, form))
    }
}

/// The `Set-Cookie` value that starts a session.
fn session_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The sign-in page, with `problem` if the last attempt failed.
pub fn sign_in_page(status: StatusCode, problem: Option<String>, note: Option<&str>) -> Response {
    let note = match note {
        Some("expired") => Some("Your key no longer works (revoked?): sign in again."),
        Some("out") => Some("Signed out."),
        _ => None,
    };
    let body = templates::render(
        "sign_in.html",
        &serde_json::json!({ "title": "Sign in", "problem": problem, "note": note }),
    );
    match body {
        Ok(body) => (status, body).into_response(),
        Err(failed) => failed,
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    key: String,
}

/// `POST /console/sign-in`: checks the key as the API does, then starts a session.
pub async fn sign_in(State(console): State<Console>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !same_origin(&parts.headers) {
        return forged().into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            Some("The form is too large.".into()),
            None,
        );
    };
    let Ok(SignIn { key }) = serde_urlencoded::from_bytes(&bytes) else {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            Some("Enter an API key.".into()),
            None,
        );
    };
    let key = key.trim().to_string();
    let forwarded = Forwarded::from_parts(&parts);
    let principal = match authenticate(&console, &key, &forwarded).await {
        Ok(principal) => principal,
        Err(e) => {
            let problem = format!("The key was not accepted: {} ({})", e.message, e.code);
            return sign_in_page(e.status, Some(problem), None);
        }
    };
    let who = Who {
        key_id: principal.key.id.clone(),
        name: principal.key.name.clone(),
        role: principal.key.role.clone(),
        tenant_id: principal.key.tenant_id.clone(),
        operator: principal.is_operator,
    };
    let session = console.sessions.start(key, who);
    let secure = console.settings.secure_cookie
        || parts
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    (
        [(header::SET_COOKIE, session_cookie(&session.id, secure))],
        Redirect::to("/console"),
    )
        .into_response()
}

/// The API's authentication of `secret`, as if it came with an API request.
async fn authenticate(
    console: &Console,
    secret: &str,
    forwarded: &Forwarded,
) -> Result<Principal, crate::api::ApiError> {
    let mut request = axum::http::Request::builder().uri("/console/sign-in");
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {secret}")) {
        request = request.header(header::AUTHORIZATION, value);
    }
    if let Some(agent) = &forwarded.user_agent {
        request = request.header(header::USER_AGENT, agent);
    }
    let (mut parts, ()) = request.body(()).expect("a valid request").into_parts();
    if let Some(addr) = forwarded.addr {
        parts.extensions.insert(ConnectInfo(addr));
    }
    Principal::from_request_parts(&mut parts, &console.state).await
}

/// A form with no fields but its CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /console/sign-out`: ends the session here and in the browser.
pub async fn sign_out(
    State(console): State<Console>,
    Posted(caller, NoFields {}): Posted<NoFields>,
) -> PageError {
    console.sessions.end(&caller.session.id);
    PageError::SignedOut(Some("out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn a_post_from_another_origin_is_not_same_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_static("corral.example:8080"),
        );
        assert!(same_origin(&headers), "no Origin: not a browser");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://corral.example:8080"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&headers));
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_scoped() {
        let cookie = session_cookie("abc", false);
        assert_eq!(
            cookie,
            "corral_console=abc; Path=/console; HttpOnly; SameSite=Strict"
        );
        assert!(session_cookie("abc", true).ends_with("; Secure"));
    }
}
