//! API keys: admins create (the secret is shown once), list and revoke their tenant's
//! keys; operator admins may do so for any tenant with `tenant_id`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;

use crate::api::extract::{ApiId, ApiJson, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Paged};
use crate::db::keys::{self, ApiKey, Role};
use crate::db::{self, DbError, audit, tenants};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", post(create).get(list))
        .route("/keys/{id}", delete(revoke))
}

/// A key as the API shows it (never the secret or its hash).
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    id: String,
    tenant_id: String,
    name: String,
    prefix: String,
    role: String,
    created_by: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> Self {
        KeyView {
            id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            role: k.role.clone(),
            created_by: k.created_by.clone(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// The tenant an admin acts on: their own, or (operator admins only) another.
async fn target_tenant(
    state: &AppState,
    principal: &Principal,
    action: &str,
    tenant_id: Option<String>,
) -> Result<String, ApiError> {
    principal
        .require(state, Role::Admin, action, "api_key", None)
        .await?;
    match tenant_id {
        None => Ok(principal.tenant_id().into()),
        Some(id) if id == principal.tenant_id() => Ok(id),
        Some(id) if principal.is_operator => {
            tenants::get(&state.db, &id).await.map_err(|e| match e {
                DbError::NotFound => ApiError::not_found(format!("tenant {id:?}")),
                e => e.into(),
            })?;
            Ok(id)
        }
        Some(id) => {
            principal.deny(state, action, "tenant", Some(&id)).await;
            Err(ApiError::forbidden(
                "only admins of the operator tenant manage other tenants' keys",
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    role: Role,
    tenant_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct CreatedKey {
    key: KeyView,
    /// The secret. Shown only now; store it safely.
    secret: String,
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let tenant_id = target_tenant(&state, &principal, "key.create", body.tenant_id).await?;
    let name = crate::names::display_name(&body.name)
        .map_err(|m| ApiError::bad_request("invalid_name", format!("key name: {m}")))?;
    let name = name.as_str();
    let secret = keys::generate_secret();
    let key = keys::new_key(
        &tenant_id,
        name,
        body.role,
        &secret,
        Some(&principal.key.id),
    );
    let mut event = principal.event("key.create", "api_key", Some(&key.id));
    event.after = Some(DbJson(
        serde_json::to_value(KeyView::from(&key)).expect("key serializes"),
    ));
    let mut tx = state.db.begin(key_scope(&principal, &tenant_id)).await?;
    keys::insert(&mut tx, &key, &secret).await?;
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: KeyView::from(&key),
            secret,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Paged<KeyView>>, ApiError> {
    let tenant_id = target_tenant(&state, &principal, "key.list", q.tenant_id).await?;
    let limit = crate::api::Page {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    let rows = keys::list(&state.db, &tenant_id, q.cursor.as_deref(), limit + 1).await?;
    let page = Paged::from_rows(rows, limit, |k| k.id.clone());
    Ok(Json(Paged {
        items: page.items.iter().map(KeyView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeQuery {
    tenant_id: Option<String>,
}

async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiId(id): ApiId,
    ApiQuery(q): ApiQuery<RevokeQuery>,
) -> Result<Json<KeyView>, ApiError> {
    let tenant_id = target_tenant(&state, &principal, "key.revoke", q.tenant_id).await?;
    let before = keys::get(&state.db, &tenant_id, &id)
        .await
        .map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(format!("key {id:?}")),
            e => e.into(),
        })?;
    let mut event = principal.event("key.revoke", "api_key", Some(&id));
    event.before = Some(DbJson(
        serde_json::to_value(KeyView::from(&before)).expect("key serializes"),
    ));
    let mut tx = state.db.begin(key_scope(&principal, &tenant_id)).await?;
    let after = keys::revoke(&mut tx, &tenant_id, &id).await?;
    event.after = Some(DbJson(
        serde_json::to_value(KeyView::from(&after)).expect("key serializes"),
    ));
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    // Cached keys are indexed by secret hash, which we do not have here: drop them all.
    state.keys.clear();
    Ok(Json(KeyView::from(&after)))
}

/// A key change is written with its audit event, which belongs to the acting
/// principal's tenant: one tenant's transaction, unless an operator acts on another.
fn key_scope<'a>(principal: &'a Principal, tenant_id: &'a str) -> db::Scope<'a> {
    if principal.tenant_id() == tenant_id {
        db::Scope::Tenant(tenant_id)
    } else {
        db::Wide::OperatorAdmin.into()
    }
}
