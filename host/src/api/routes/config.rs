//! An agent's config values and secrets.
//!
//! - `GET /agents/{name}/config` (viewer): every value.
//! - `PUT /agents/{name}/config` (admin): *replaces* every value with the body's
//!   `values` (a value left out is removed), like `PUT …/policy` replaces the policy;
//!   audited with the values before and after.
//! - `DELETE /agents/{name}/config/{key}` (admin): removes one value.
//! - `PUT /agents/{name}/secrets/{secret}` (admin): sets one secret, sealed with the
//!   server's key (`409 secrets_disabled` without one).
//! - `GET /agents/{name}/secrets` (viewer): names and times. No endpoint returns a
//!   secret's value; audit events name the secret and never carry its value.
//! - `DELETE /agents/{name}/secrets/{secret}` (admin): removes one secret.
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]{0,63}`; values are at most 64 KiB; an agent has at
//! most 256 values and 256 secrets.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::find;
use crate::api::error::{ErrorBody, ErrorCode, responses};
use crate::api::extract::{ApiJson, ApiPath, Principal};
use crate::api::{ApiError, AppState};
use crate::db::config::{self, MAX_ENTRIES, MAX_VALUE_BYTES, SecretInfo};
use crate::db::keys::Role;
use crate::db::{self, audit};
use crate::policy::check_config_name;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(show, replace))
        .routes(routes!(remove))
        .routes(routes!(list_secrets))
        .routes(routes!(set_secret, remove_secret))
}

/// An agent's config values.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigValues {
    /// Values by name.
    values: BTreeMap<String, String>,
}

/// An agent's secrets, without values.
#[derive(Debug, Serialize, ToSchema)]
struct SecretList {
    items: Vec<SecretInfo>,
}

/// The body of `PUT …/secrets/{secret}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    value: String,
}

fn check_name(name: &str, code: ErrorCode) -> Result<(), ApiError> {
    check_config_name(name).map_err(|why| ApiError::bad_request(code, why))
}

fn check_value(name: &str, value: &str, code: ErrorCode) -> Result<(), ApiError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::bad_request(
            code,
            format!(
                "{name} is {} bytes; a value may be at most {MAX_VALUE_BYTES} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Get an agent's config values
///
/// **Role:** viewer.
///
/// Every config value set on the agent. The agent reads them with `config.get` (no
/// grant needed).
#[utoipa::path(
    get,
    path = "/agents/{name}/config",
    operation_id = "getAgentConfig",
    tag = "config",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    responses(
        (status = 200, description = "The values.", body = ConfigValues),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ConfigValues>, ApiError> {
    principal
        .require_on_agent(&state, Role::Viewer, "agent.config.get", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let values = config::values(&state.db, principal.tenant_id(), &agent.id).await?;
    Ok(Json(ConfigValues { values }))
}

/// Replace an agent's config values
///
/// **Role:** admin.
///
/// Replaces *all* of the agent's config values with `values`: a value left out is
/// removed (send the whole map; to remove one value, `DELETE …/config/{key}`). Names
/// are 1 to 64 ASCII letters, digits and `_`, not starting with a digit; values are
/// strings of at most 64 KiB; at most 256 values. Config values are not secret: they
/// are shown to viewers and recorded in the audit trail (`agent.config.update`, with
/// the values before and after). Use secrets for anything sensitive.
#[utoipa::path(
    put,
    path = "/agents/{name}/config",
    operation_id = "replaceAgentConfig",
    tag = "config",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    request_body(content = ConfigValues, content_type = "application/json", description = "The new values."),
    responses(
        (status = 200, description = "The values now set.", body = ConfigValues),
        (status = 400, description = "The path or body is invalid: not UTF-8 (`invalid_path`); not JSON, an unknown field or a value that is not a string (`invalid_json`); a bad name, a value over 64 KiB or more than 256 values (`invalid_config`). Codes: `invalid_path`, `invalid_json`, `invalid_config`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn replace(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ConfigValues>,
) -> Result<Json<ConfigValues>, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.config.update", &name)
        .await?;
    if body.values.len() > MAX_ENTRIES {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidConfig,
            format!(
                "{} values given; an agent may have at most {MAX_ENTRIES}",
                body.values.len()
            ),
        ));
    }
    for (key, value) in &body.values {
        check_name(key, ErrorCode::InvalidConfig)?;
        check_value(key, value, ErrorCode::InvalidConfig)?;
    }
    let agent = find(&state, &principal, &name).await?;
    let before = config::values(&state.db, principal.tenant_id(), &agent.id).await?;
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    config::replace_values(
        &mut tx,
        principal.tenant_id(),
        &agent.id,
        &body.values,
        db::now(),
    )
    .await?;
    let mut event = principal.event("agent.config.update", "agent", Some(&agent.id));
    event.before = Some(DbJson(serde_json::json!({ "values": before })));
    event.after = Some(DbJson(serde_json::json!({ "values": body.values })));
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(Json(body))
}

/// Remove one config value
///
/// **Role:** admin.
///
/// Removes one config value, recorded in the audit trail (`agent.config.delete`, with
/// the value removed).
#[utoipa::path(
    delete,
    path = "/agents/{name}/config/{key}",
    operation_id = "deleteAgentConfigValue",
    tag = "config",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ("key" = String, Path, description = "The config value's name."),
    ),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No live agent of this name in the caller's tenant, or it has no such value. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.config.delete", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let Some(before) = config::value(&state.db, principal.tenant_id(), &agent.id, &key).await?
    else {
        return Err(ApiError::not_found(format!("config value {key:?}")));
    };
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    if !config::delete_value(&mut tx, principal.tenant_id(), &agent.id, &key).await? {
        return Err(ApiError::not_found(format!("config value {key:?}")));
    }
    let mut event = principal.event("agent.config.delete", "agent", Some(&agent.id));
    event.before = Some(DbJson(serde_json::json!({ "name": key, "value": before })));
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List an agent's secrets (names only)
///
/// **Role:** viewer.
///
/// The names of the agent's secrets and when each was last set. No endpoint ever
/// returns a secret's value.
#[utoipa::path(
    get,
    path = "/agents/{name}/secrets",
    operation_id = "listAgentSecrets",
    tag = "config",
    params(
        ("name" = String, Path, description = "The agent's name."),
    ),
    responses(
        (status = 200, description = "The secrets, by name.", body = SecretList),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn list_secrets(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<SecretList>, ApiError> {
    principal
        .require_on_agent(&state, Role::Viewer, "agent.secret.list", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let items = config::secrets(&state.db, principal.tenant_id(), &agent.id).await?;
    Ok(Json(SecretList { items }))
}

/// Set a secret
///
/// **Role:** admin.
///
/// Sets (or replaces) one secret of the agent. It is encrypted at rest with the
/// server's key (`CORRAL_SECRETS_KEY`; XChaCha20-Poly1305, a fresh nonce per write,
/// bound to this agent and name) and never returned by any endpoint. The agent reads it
/// with `config.get-secret` only if its policy grants the name (`grants.secrets`).
/// Recorded in the audit trail (`agent.secret.set`) with the name only, never the
/// value. Values are 1 byte to 64 KiB; an agent has at most 256 secrets.
#[utoipa::path(
    put,
    path = "/agents/{name}/secrets/{secret}",
    operation_id = "setAgentSecret",
    tag = "config",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ("secret" = String, Path, description = "The secret's name: 1 to 64 ASCII letters, digits and `_`, not starting with a digit."),
    ),
    request_body(content = SecretValue, content_type = "application/json", description = "The value."),
    responses(
        (status = 200, description = "Replaced an existing secret.", body = SecretInfo),
        (status = 201, description = "Created the secret.", body = SecretInfo),
        (status = 400, description = "The path or body is invalid: not UTF-8 (`invalid_path`); not JSON or an unknown field (`invalid_json`); a bad name, or an empty value or one over 64 KiB (`invalid_secret`). Codes: `invalid_path`, `invalid_json`, `invalid_secret`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
        (status = 409, description = "The server has no secrets key (Postgres without `CORRAL_SECRETS_KEY`: `secrets_disabled`), or the agent already has 256 secrets (`too_many_secrets`). Codes: `secrets_disabled`, `too_many_secrets`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn set_secret(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((name, secret)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SecretValue>,
) -> Result<(StatusCode, Json<SecretInfo>), ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.secret.set", &name)
        .await?;
    let Some(key) = &state.settings.secrets_key else {
        return Err(ApiError::conflict(
            ErrorCode::SecretsDisabled,
            "this server has no secrets key: set CORRAL_SECRETS_KEY (base64 of 32 random bytes) to store secrets",
        ));
    };
    check_name(&secret, ErrorCode::InvalidSecret)?;
    check_value(&secret, &body.value, ErrorCode::InvalidSecret)?;
    if body.value.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidSecret,
            "a secret's value must not be empty; delete the secret instead",
        ));
    }
    let agent = find(&state, &principal, &name).await?;
    let sealed = key.seal(&agent.id, &secret, &body.value);
    let now = db::now();
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    let (count, exists) =
        config::count_secrets(&mut tx, principal.tenant_id(), &agent.id, &secret).await?;
    if !exists && count >= MAX_ENTRIES as i64 {
        return Err(ApiError::conflict(
            ErrorCode::TooManySecrets,
            format!("agent {name:?} already has {count} secrets; the most is {MAX_ENTRIES}"),
        ));
    }
    config::put_secret(
        &mut tx,
        principal.tenant_id(),
        &agent.id,
        &secret,
        &sealed,
        now,
    )
    .await?;
    // The name and that it was set: never the value, nor anything derived from it.
    let mut event = principal.event("agent.secret.set", "agent", Some(&agent.id));
    event.after = Some(DbJson(serde_json::json!({
        "name": secret,
        "value": "[redacted]",
        "replaced": exists,
    })));
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    let status = if exists {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(SecretInfo {
            name: secret,
            updated_at: now,
        }),
    ))
}

/// Remove a secret
///
/// **Role:** admin.
///
/// Removes one secret, recorded in the audit trail (`agent.secret.delete`, with the
/// name).
#[utoipa::path(
    delete,
    path = "/agents/{name}/secrets/{secret}",
    operation_id = "deleteAgentSecret",
    tag = "config",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ("secret" = String, Path, description = "The secret's name: 1 to 64 ASCII letters, digits and `_`, not starting with a digit."),
    ),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, response = responses::InvalidPath),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No live agent of this name in the caller's tenant, or it has no such secret. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn remove_secret(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((name, secret)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.secret.delete", &name)
        .await?;
    let agent = find(&state, &principal, &name).await?;
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    if !config::delete_secret(&mut tx, principal.tenant_id(), &agent.id, &secret).await? {
        return Err(ApiError::not_found(format!("secret {secret:?}")));
    }
    let mut event = principal.event("agent.secret.delete", "agent", Some(&agent.id));
    event.before = Some(DbJson(serde_json::json!({ "name": secret })));
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
