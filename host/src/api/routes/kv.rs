//! An agent's key-value state, for operators: list its keys, clear them, delete one.
//!
//! Values are the agent's data, and may be its users' data: a listing shows keys, sizes
//! and times to viewers, and values (base64) only with `?values=true`, which needs the
//! developer role — the role that can invoke the agent and so could read them anyway.
//! Clearing and deleting need the admin role and are audited (`agent.kv.clear`,
//! `agent.kv.delete`), as are refusals.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;

use super::agents::find;
use crate::api::extract::{ApiPath, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::audit;
use crate::db::keys::Role;
use crate::db::kv::{self, KvEntry};
use crate::runtime::capabilities::kv::{MAX_KEY_BYTES, check_key};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents/{name}/kv", get(list).delete(clear))
        .route("/agents/{name}/kv/{key}", delete(remove))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only keys that start with this.
    #[serde(default)]
    prefix: String,
    /// The `next_cursor` of the previous page (a key).
    cursor: Option<String>,
    /// Keys per page, 1 to 200 (default 50).
    limit: Option<i64>,
    /// Include values, base64 (developers and admins only).
    #[serde(default)]
    values: bool,
}

/// One key as the API shows it.
#[derive(Debug, Serialize)]
struct EntryView {
    key: String,
    size_bytes: i64,
    updated_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
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
            "invalid_query",
            format!("prefix must be at most {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearQuery {
    /// Only keys that start with this; every key when absent.
    #[serde(default)]
    prefix: String,
}

#[derive(Debug, Serialize)]
struct Cleared {
    deleted: u64,
}

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

async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal
        .require_on_agent(&state, Role::Admin, "agent.kv.delete", &name)
        .await?;
    check_key(&key).map_err(|m| ApiError::bad_request("invalid_key", m))?;
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
