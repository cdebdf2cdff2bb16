//! Tenants: created and listed by admins of the operator tenant. Creating a tenant
//! also creates its first admin key, whose secret is shown once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as DbJson;

use super::keys::KeyView;
use crate::api::extract::{ApiJson, ApiQuery, Principal};
use crate::api::{ApiError, AppState, Page, Paged};
use crate::db::keys::{self, Role};
use crate::db::tenants::{self, Tenant};
use crate::db::{self, DbError, audit};
use crate::policy::TenantPolicy;

pub fn router() -> Router<AppState> {
    Router::new().route("/tenants", post(create).get(list))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    /// Limits, quotas and plan caps (default: none beyond the host's).
    #[serde(default)]
    policy: TenantPolicy,
}

#[derive(Debug, Serialize)]
struct CreatedTenant {
    tenant: Tenant,
    admin_key: KeyView,
    /// The admin key's secret. Shown only now.
    secret: String,
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<CreatedTenant>), ApiError> {
    require_operator(&state, &principal, "tenant.create").await?;
    let name = crate::names::display_name(&body.name)
        .map_err(|m| ApiError::bad_request("invalid_name", format!("tenant name: {m}")))?;
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
            DbError::Conflict(m) => ApiError::conflict("tenant_exists", m),
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
        .map_err(|m| ApiError::bad_request("invalid_policy", m))
}
