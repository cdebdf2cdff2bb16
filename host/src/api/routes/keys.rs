//! API keys: admins create (the secret is shown once), list and revoke their tenant's
//! keys; operator admins may do so for any tenant with `tenant_id`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::error::{ErrorBody, ErrorCode, responses};
use crate::api::extract::{ApiId, ApiJson, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Paged};
use crate::db::keys::{self, ApiKey, Role};
use crate::db::{self, DbError, audit, tenants};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
}

/// A key as the API shows it (never the secret or its hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct KeyView {
    /// The key's id (UUIDv7).
    id: String,
    tenant_id: String,
    name: String,
    /// The first 12 characters of the secret, to recognise it.
    prefix: String,
    role: String,
    /// The key that created it; null for the bootstrap key.
    created_by: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    /// Updated at most once a minute.
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A revoked key authenticates nothing.
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

/// A new key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// A label; surrounding whitespace is trimmed.
    name: String,
    role: Role,
    /// Create the key in this tenant (operator admins only). Default: the caller's
    /// tenant.
    tenant_id: Option<String>,
}

/// A new key, with its secret.
#[derive(Debug, Serialize, ToSchema)]
struct CreatedKey {
    key: KeyView,
    /// The secret. Shown only now; store it safely.
    secret: String,
}

/// Create an API key
///
/// **Role:** admin (of the operator tenant for another `tenant_id`).
///
/// Creates a key. Its secret is in the response and shown only then.
#[utoipa::path(
    post,
    path = "/keys",
    operation_id = "createKey",
    tag = "keys",
    request_body(content = CreateKey, content_type = "application/json", description = "The key."),
    responses(
        (status = 201, description = "The key and its secret.", body = CreatedKey),
        (status = 400, description = "The request body is invalid. Codes: `invalid_json`, `invalid_name`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No tenant with this `tenant_id`. Codes: `not_found`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let tenant_id = target_tenant(&state, &principal, "key.create", body.tenant_id).await?;
    let name = crate::names::display_name(&body.name)
        .map_err(|m| ApiError::bad_request(ErrorCode::InvalidName, format!("key name: {m}")))?;
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Act on this tenant's keys (operator admins only). Default: the caller's tenant.
    tenant_id: Option<String>,
    /// Items per page, 1 to 200 (default 50). Outside that range: `400 invalid_query`.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List API keys
///
/// **Role:** admin (of the operator tenant for another `tenant_id`).
///
/// A tenant's keys, revoked ones included, oldest first. Unknown parameters are `400`.
#[utoipa::path(
    get,
    path = "/keys",
    operation_id = "listKeys",
    tag = "keys",
    params(
        ListQuery,
    ),
    responses(
        (status = 200, description = "A page of keys.", body = Paged<KeyView>),
        (status = 400, response = responses::InvalidQuery),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No tenant with this `tenant_id`. Codes: `not_found`.", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RevokeQuery {
    /// Act on this tenant's keys (operator admins only). Default: the caller's tenant.
    tenant_id: Option<String>,
}

/// Revoke an API key
///
/// **Role:** admin (of the operator tenant for another `tenant_id`).
///
/// Revokes a key: it authenticates nothing from then on. Revoking a revoked key keeps
/// the first `revoked_at`.
#[utoipa::path(
    delete,
    path = "/keys/{id}",
    operation_id = "revokeKey",
    tag = "keys",
    params(
        ("id" = String, Path, description = "The key's id."),
        RevokeQuery,
    ),
    responses(
        (status = 200, description = "The revoked key.", body = KeyView),
        (status = 400, response = responses::InvalidPathOrQuery),
        (status = 403, response = responses::Forbidden),
        (status = 404, description = "No such key in the tenant, or no such tenant. Codes: `not_found`.", body = ErrorBody),
    )
)]
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
