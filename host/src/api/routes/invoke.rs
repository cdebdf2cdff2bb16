//! `POST /v1/agents/{name}/invoke`: run an action in a fresh sandbox and answer only
//! once the execution record is committed.
//!
//! The response is `200` whenever the agent ran, whatever the outcome (the outcome is
//! in the body, and the execution is recorded); errors (4xx/5xx) mean it did not run.
//! With an `Idempotency-Key` header a retry returns the first response without running
//! or billing again, and reusing the key for a different request is `422
//! idempotency_key_reused`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::agents::find;
use crate::api::extract::{ApiJson, ApiPath, Principal};
use crate::api::{ApiError, AppState};
use crate::db::idempotency::{self, Reservation};
use crate::db::keys::Role;
use crate::invocations::Invocation;
use crate::policy::LimitOverrides;

pub fn router() -> Router<AppState> {
    Router::new().route("/agents/{name}/invoke", post(invoke))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    action: String,
    /// Passed to the guest exactly as sent (numbers beyond `f64` included).
    #[serde(default = "empty_object")]
    input: Box<RawValue>,
    /// Run this version (id or semver) instead of the active one.
    version: Option<String>,
    correlation_id: Option<String>,
    /// Per-call limits; each may only tighten the agent's.
    #[serde(default)]
    limits: LimitOverrides,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("{} is JSON")
}

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
    body.limits
        .validate(&limits)
        .map_err(|m| ApiError::bad_request("invalid_limits", format!("{m} (the agent's limit)")))?;
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
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still running; retry later",
                ));
            }
            Reservation::Mismatch => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
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
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

fn request_hash(agent: &str, body: &InvokeBody) -> String {
    let canonical = serde_json::to_string(&(agent, body)).expect("body serializes");
    hex::encode(Sha256::digest(canonical.as_bytes()))
}
