//! Tenants: created and listed by admins of the operator tenant. Creating a tenant
//! also creates its first admin key, whose secret is shown once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::keys::KeyView;
use crate::api::error::{ErrorBody, ErrorCode, responses};
use crate::api::extract::{ApiJson, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::keys::{self, Role};
use crate::db::tenants::{self, Tenant};
use crate::db::{self, DbError, audit};
use crate::policy::TenantPolicy;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list))
}

/// Operator admins only; everyone else is refused and the attempt recorded.
pub async fn require_operator(
    state: &AppState,
    principal: &Principal,
    action: &str,
) -> Result<(), ApiError> {
    principal
        .require(state, Role::Admin, action, "tenant", None)
        .await?;
    if !principal.is_operator {
        principal.deny(state, action, "tenant", None).await;
        return Err(ApiError::forbidden(format!(
            "{action} is for admins of the operator tenant"
        )));
    }
    Ok(())
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    /// Unique; surrounding whitespace is trimmed.
    name: String,
    /// Limits, quotas and plan caps (default: none beyond the host's).
    #[serde(default)]
    policy: TenantPolicy,
}

/// A new tenant, with its first admin key.
#[derive(Debug, Serialize, ToSchema)]
struct CreatedTenant {
    tenant: Tenant,
    admin_key: KeyView,
    /// The admin key's secret. Shown only now.
    secret: String,
}

/// Create a tenant
///
/// **Role:** admin of the operator tenant.
///
/// Creates a tenant, with an optional policy (limits, quotas, plan caps), and its first
/// admin key, whose secret is in the response and shown only then.
#[utoipa::path(
    post,
    path = "/tenants",
    operation_id = "createTenant",
    tag = "tenants",
    request_body(content = CreateTenant, content_type = "application/json", description = "The tenant."),
    responses(
        (status = 201, description = "The tenant and its admin key.", body = CreatedTenant),
        (status = 400, description = "The request body is invalid. Codes: `invalid_json`, `invalid_name`, `invalid_policy`.", body = ErrorBody),
        (status = 403, response = responses::Forbidden),
        (status = 409, description = "A tenant of this name exists. Codes: `tenant_exists`.", body = ErrorBody),
        (status = 413, description = "The body is larger than `CORRAL_MAX_BODY`. Codes: `payload_too_large`.", body = ErrorBody),
        (status = 415, description = "The body was not sent as `Content-Type: application/json`. Codes: `unsupported_media_type`.", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    require_operator(&state, &principal, "tenant.create").await?;
    let name = crate::names::display_name(&body.name)
        .map_err(|m| ApiError::bad_request(ErrorCode::InvalidName, format!("tenant name: {m}")))?;
    let name = name.as_str();
    validate(&state, &body.policy)?;
    let tenant = Tenant {
        id: db::new_id(),
        name: name.into(),
        is_operator: false,
        created_at: db::now(),
        policy: DbJson(body.policy),
    };
    let secret = keys::generate_secret();
    let key = keys::new_key(
        &tenant.id,
        "admin",
        Role::Admin,
        &secret,
        Some(&principal.key.id),
    );

    let mut event = principal.event("tenant.create", "tenant", Some(&tenant.id));
    event.after = Some(DbJson(
        serde_json::json!({ "name": tenant.name, "admin_key_id": key.id }),
    ));
    // The new tenant's key and the operator's audit event: two tenants, one transaction.
    let mut tx = state.db.begin(db::Wide::OperatorAdmin).await?;
    tenants::insert(&mut tx, &tenant)
        .await
        .map_err(|e| match e {
            DbError::Conflict(m) => ApiError::conflict(ErrorCode::TenantExists, m),
            e => e.into(),
        })?;
    keys::insert(&mut tx, &key, &secret).await?;
    audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant,
            admin_key: KeyView::from(&key),
            secret,
        }),
    ))
}

/// List tenants
///
/// **Role:** admin of the operator tenant.
///
/// Every tenant, oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/tenants",
    operation_id = "listTenants",
    tag = "tenants",
    params(
        Page,
    ),
    responses(
        (status = 200, description = "A page of tenants.", body = Paged<Tenant>),
        (status = 400, response = responses::InvalidQuery),
        (status = 403, response = responses::Forbidden),
    )
)]
async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Paged<Tenant>>, ApiError> {
    require_operator(&state, &principal, "tenant.list").await?;
    let limit = page.limit()?;
    let rows = tenants::list(&state.db, page.cursor.as_deref(), limit + 1).await?;
    Ok(Json(Paged::from_rows(rows, limit, |t| t.id.clone())))
}

/// Checks a tenant policy against the host's ceilings, naming the field.
pub fn validate(state: &AppState, policy: &TenantPolicy) -> Result<(), ApiError> {
    policy
        .validate(
            &state.settings.limits,
            state.settings.max_upload_bytes as u64,
        )
        .and_then(|()| {
            policy
                .retention
                .validate(state.invocations.settings.retention.audit_floor)
        })
        .map_err(|m| ApiError::bad_request(ErrorCode::InvalidPolicy, m))
}
