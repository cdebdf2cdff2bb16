//! `POST /v1/agents/{name}/invoke`: run an action in a fresh sandbox and answer only
//! once the execution record is committed.
//!
//! The response is `200` whenever the agent ran, whatever the outcome (the outcome is
//! in the body, and the execution is recorded); errors (4xx/5xx) mean it did not run.
//! With an `Idempotency-Key` header a retry returns the first response without running
//! or billing again, and reusing the key for a different request is `422
//! idempotency_key_reused`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::find;
use crate::api::error::{ErrorBody, ErrorCode, responses};
use crate::api::extract::{ApiJson, ApiPath, Principal};
use crate::api::{ApiError, AppState};
use crate::db::idempotency::{self, Reservation};
use crate::db::keys::Role;
use crate::invocations::{Invocation, Receipt};
use crate::policy::LimitOverrides;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(invoke))
}

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = InvokeRequest)]
struct InvokeBody {
    /// One of the actions the version's metadata lists.
    action: String,
    /// Passed to the guest exactly as sent (numbers beyond `f64` included).
    #[serde(default = "empty_object")]
    #[schema(value_type = serde_json::Value)]
    input: Box<RawValue>,
    /// Run this version (id or semver) instead of the active one.
    version: Option<String>,
    /// Recorded with the execution and filterable in `GET /v1/executions`.
    correlation_id: Option<String>,
    /// Per-call limits; each may only tighten the agent's.
    #[serde(default)]
    limits: LimitOverrides,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("{} is JSON")
}

/// Invoke an agent
///
/// **Role:** developer.
///
/// Runs one action in a fresh sandbox and answers once the execution record is
/// committed. The status is `200` whenever the agent ran, whatever the outcome: the
/// outcome is in the body. An error status means it did not run and nothing was
/// recorded or billed.
///
/// Limits are the host's, tightened by the tenant's policy, the agent's and the call's
/// `limits`. Just before the guest runs, the agent's and its tenant's quotas are
/// checked (budgets, then rate and concurrency, all or nothing): a refusal is `429`
/// with `Retry-After`, recorded in the audit trail (`agent.invoke`, result `denied`,
/// `after: {code, scope, budget, retry_after_ms}`). With a fuel budget set, the call's
/// fuel limit is lowered to the fuel left in it, so the last admitted call may end
/// `fuel_exhausted`.
///
/// With an `Idempotency-Key`, a retry of the same request returns the first response
/// without running or billing again.
#[utoipa::path(
    post,
    path = "/agents/{name}/invoke",
    operation_id = "invokeAgent",
    tag = "invocations",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters, unique per tenant. A retry with the same key and request returns the stored response; with a different request it is `422 idempotency_key_reused`; while the first is still running, `409 idempotency_in_progress`."),
    ),
    request_body(content = InvokeBody, content_type = "application/json", description = "What to run."),
    responses(
        (status = 200, description = "The agent ran; see `outcome`.", body = Receipt),
        (status = 400, description = "The path or body is invalid, or the input is not for this agent: an action it does not describe (`unknown_action`) or input its schema refuses (`invalid_input`, naming the path), refused before anything runs. Codes: `invalid_path`, `invalid_json`, `invalid_text`, `unknown_action`, `invalid_input`, `invalid_limits`, `invalid_idempotency_key`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No live agent of this name, or it has no such version. Codes: `not_found`.", body = ErrorBody),
        (status = 409, description = "The agent cannot run now. Codes: `agent_paused`, `no_active_version`, `idempotency_in_progress`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "This `Idempotency-Key` was used for a different request. Codes: `idempotency_key_reused`.", body = ErrorBody),
        (status = 429, description = "A quota of the agent or of its tenant refuses the invocation; nothing ran or was charged. `rate_limited`: the rate quota's token bucket is empty (`Retry-After`: seconds until a token is back). `concurrency_limited`: `max_concurrency` invocations are running (`Retry-After: 1`, a hint: a slot frees when any of them finishes). `budget_exhausted`: a budget is spent for the current UTC day or month (`Retry-After`: seconds until that period rolls over). The message says whose quota (the agent's or the tenant's) and, for budgets, which one. Codes: `rate_limited`, `concurrency_limited`, `budget_exhausted`.", body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until trying again may succeed: whole seconds, rounded up, at least 1."))),
        (status = 503, description = "The server is shutting down. Codes: `unavailable`.", body = ErrorBody),
    )
)]
async fn invoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<InvokeBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let queued_at = state.quotas.clock().now();
    principal
        .require_on_agent(&state, Role::Developer, "agent.invoke", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let tenant = state.tenant(principal.tenant_id()).await?;
    let limits = state.invocations.limits(&tenant, &agent);
    body.limits.validate(&limits).map_err(|m| {
        ApiError::bad_request(ErrorCode::InvalidLimits, format!("{m} (the agent's limit)"))
    })?;
    let limits = body.limits.tighten(limits);

    let idempotency_key = idempotency_key(&headers)?;
    if let Some(key) = &idempotency_key {
        let hash = request_hash(&name, &body);
        let lease = state.invocations.idempotency_lease();
        match idempotency::reserve(&state.db, principal.tenant_id(), key, &hash, &lease).await? {
            Reservation::Reserved => {}
            Reservation::Completed(response) => return Ok((StatusCode::OK, Json(response))),
            Reservation::InProgress => {
                return Err(ApiError::conflict(
                    ErrorCode::IdempotencyInProgress,
                    "a request with this Idempotency-Key is still running; retry later",
                ));
            }
            Reservation::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used for a different request",
                ));
            }
        }
    }

    let mut invocation = Invocation::new(
        principal.actor(),
        agent,
        tenant,
        body.action,
        body.input.get().to_string(),
        limits,
        queued_at,
    );
    invocation.version = body.version;
    invocation.correlation_id = body.correlation_id;
    invocation.idempotency_key = idempotency_key;
    // The pipeline detaches the run: a client that hangs up (or a request that times
    // out) drops this handler, but the run still ends and is recorded and charged.
    let invoked = state.invocations.run(invocation).await?;
    Ok((StatusCode::OK, Json(invoked.response)))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

fn request_hash(agent: &str, body: &InvokeBody) -> String {
    let canonical = serde_json::to_string(&(agent, body)).expect("body serializes");
    hex::encode(Sha256::digest(canonical.as_bytes()))
}
