//! An agent's key-value state, for operators: list its keys, clear them, delete one.
//!
//! Values are the agent's data, and may be its users' data: a listing shows keys, sizes
//! and times to viewers, and values (base64) only with `?values=true`, which needs the
//! developer role — the role that can invoke the agent and so could read them anyway.
//! Clearing and deleting need the admin role and are audited (`agent.kv.clear`,
//! `agent.kv.delete`), as are refusals.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::agents::find;
use crate::api::error::{ErrorBody, ErrorCode, responses};
use crate::api::extract::{ApiPath, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::audit;
use crate::db::keys::Role;
use crate::db::kv::{self, KvEntry};
use crate::runtime::capabilities::kv::{MAX_KEY_BYTES, check_key};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, clear))
        .routes(routes!(remove))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only keys that start with this (at most 512 bytes).
    #[serde(default)]
    prefix: String,
    /// The `next_cursor` of the previous page (a key).
    cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50). Outside that range: `400 invalid_query`.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Include each value, base64 (developer role).
    #[serde(default)]
    values: bool,
}

/// One key as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KvEntry)]
struct EntryView {
    /// The key.
    key: String,
    /// Bytes of the key and its value together (what `max_total_bytes` counts).
    size_bytes: i64,
    /// When it was last set.
    updated_at: chrono::DateTime<chrono::Utc>,
    /// When it expires; absent when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The value, base64; only with `values=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

impl From<KvEntry> for EntryView {
    fn from(e: KvEntry) -> Self {
        EntryView {
            key: e.key,
            size_bytes: e.size_bytes,
            updated_at: e.updated_at,
            expires_at: e.expires_at,
            value_base64: e.value.map(|v| BASE64.encode(v)),
        }
    }
}

fn check_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("prefix must be at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// List an agent's keys
///
/// **Role:** viewer; developer with `values=true`.
///
/// The agent's unexpired keys in byte order, a page at a time, with their sizes and
/// times. Values are the agent's (and perhaps its users') data: they are shown, base64,
/// only with `values=true`, which needs the developer role (who can invoke the agent
/// anyway).
#[utoipa::path(
    get,
    path = "/agents/{name}/kv",
    operation_id = "listKv",
    tag = "kv",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of keys.", body = Paged<EntryView>),
        (status = 400, response = responses::InvalidPathOrQuery),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Paged<EntryView>>, ApiError> {
    let role = if query.values {
        Role::Developer
    } else {
        Role::Viewer
    };
    principal
        .require_on_agent(&state, role, "agent.kv.list", &name)
        .await?;
    let limit = Page {
        limit: query.limit,
        cursor: None,
    }
    .limit()?;
    check_prefix(&query.prefix)?;
    let agent = find(&state, &principal, &name).await?;
    let now = state.quotas.clock().now();
    let mut tx = state.db.begin_read(principal.tenant_id()).await?;
    let (prefix, cursor) = (query.prefix.as_str(), query.cursor.as_deref());
    let rows = if query.values {
        kv::list_with_values(&mut tx, &agent.id, prefix, cursor, limit + 1, now).await?
    } else {
        kv::list(&mut tx, &agent.id, prefix, cursor, limit + 1, now).await?
    };
    let page = Paged::from_rows(rows, limit, |e| e.key.clone());
    Ok(Json(Paged {
        items: page.items.into_iter().map(EntryView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ClearQuery {
    /// Only keys that start with this (at most 512 bytes); every key when absent.
    #[serde(default)]
    prefix: String,
}

/// How many keys were deleted.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KvCleared)]
struct Cleared {
    /// How many unexpired keys were removed.
    deleted: u64,
}

/// Clear an agent's keys
///
/// **Role:** admin.
///
/// Removes every key of the agent, or those that start with `prefix`, and records
/// `agent.kv.clear` in the audit trail with the prefix and the count.
#[utoipa::path(
    delete,
    path = "/agents/{name}/kv",
    operation_id = "clearKv",
    tag = "kv",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ClearQuery,
    ),
    responses(
        (status = 200, description = "How many keys were removed.", body = Cleared),
        (status = 400, response = responses::InvalidPathOrQuery),
        (status = 403, response = responses::Forbidden),
        (status = 404, response = responses::AgentNotFound),
    )
)]
async fn clear(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ClearQuery>,
) -> Result<Json<Cleared>, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.kv.clear", &name)
        .await?;
    check_prefix(&query.prefix)?;
    let agent = find(&state, &principal, &name).await?;
    let now = state.quotas.clock().now();
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    let deleted = kv::clear(&mut tx, &agent.id, &query.prefix, now).await?;
    let mut event = principal.event("agent.kv.clear", "agent", Some(&agent.id));
    event.after = Some(DbJson(
        serde_json::json!({ "prefix": query.prefix, "deleted": deleted }),
    ));
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(Json(Cleared { deleted }))
}

/// Delete one key
///
/// **Role:** admin.
///
/// Removes one key of the agent and records `agent.kv.delete` (with the key) in the
/// audit trail. Percent-encode the key: `note/a` is `note%2Fa`.
#[utoipa::path(
    delete,
    path = "/agents/{name}/kv/{key}",
    operation_id = "deleteKvKey",
    tag = "kv",
    params(
        ("name" = String, Path, description = "The agent's name."),
        ("key" = String, Path, description = "The key, percent-encoded."),
    ),
    responses(
        (status = 204, description = "The key was removed."),
        (status = 400, description = "The key is longer than 512 bytes, or the path is not UTF-8. Codes: `invalid_key`, `invalid_path`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No such agent, or the agent has no such (unexpired) key. Codes: `not_found`.", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.kv.delete", &name)
        .await?;
    check_key(&key).map_err(|m| ApiError::bad_request(ErrorCode::InvalidKey, m))?;
    let agent = find(&state, &principal, &name).await?;
    let now = state.quotas.clock().now();
    let mut tx = state.db.begin(principal.tenant_id()).await?;
    if !kv::delete(&mut tx, &agent.id, &key, now).await? {
        // An expired entry may have gone with the transaction; nothing else changed.
        tx.commit().await?;
        return Err(ApiError::not_found(format!(
            "key {key:?} of agent {name:?}"
        )));
    }
    let mut event = principal.event("agent.kv.delete", "agent", Some(&agent.id));
    event.after = Some(DbJson(serde_json::json!({ "key": key })));
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
