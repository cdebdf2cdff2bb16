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

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;

use super::agents::find;
use crate::api::extract::{ApiJson, ApiPath, Principal};
use crate::api::{ApiError, AppState};
use crate::db::config::{self, MAX_ENTRIES, MAX_VALUE_BYTES, SecretInfo};
use crate::db::keys::Role;
use crate::db::{self, audit};
use crate::policy::check_config_name;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents/{name}/config", get(show).put(replace))
        .route("/agents/{name}/config/{key}", axum::routing::delete(remove))
        .route("/agents/{name}/secrets", get(list_secrets))
        .route(
            "/agents/{name}/secrets/{secret}",
            put(set_secret).delete(remove_secret),
        )
}

/// An agent's config values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigValues {
    values: BTreeMap<String, String>,
}

/// An agent's secrets, without values.
#[derive(Debug, Serialize)]
struct SecretList {
    items: Vec<SecretInfo>,
}

/// The body of `PUT …/secrets/{secret}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    value: String,
}

fn check_name(name: &str, code: &'static str) -> Result<(), ApiError> {
    check_config_name(name).map_err(|why| ApiError::bad_request(code, why))
}

fn check_value(name: &str, value: &str, code: &'static str) -> Result<(), ApiError> {
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
            "invalid_config",
            format!(
                "{} values given; an agent may have at most {MAX_ENTRIES}",
                body.values.len()
            ),
        ));
    }
    for (key, value) in &body.values {
        check_name(key, "invalid_config")?;
        check_value(key, value, "invalid_config")?;
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
            "secrets_disabled",
            "this server has no secrets key: set CORRAL_SECRETS_KEY (base64 of 32 random bytes) to store secrets",
        ));
    };
    check_name(&secret, "invalid_secret")?;
    check_value(&secret, &body.value, "invalid_secret")?;
    if body.value.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_secret",
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
            "too_many_secrets",
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
