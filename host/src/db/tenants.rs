//! Tenants: the unit of isolation. The operator tenant (created at bootstrap) may
//! manage the others.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use sqlx::types::Json;

use super::{Db, DbError, ResultExt, Tx};
use crate::policy::TenantPolicy;
use crate::{on_pool, on_tx};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Tenant {
    /// Its id.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// Whether this is the operator tenant, whose admins manage all tenants.
    pub is_operator: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Limits and quotas for all its agents, and its plan caps.
    #[schema(value_type = TenantPolicy)]
    pub policy: Json<TenantPolicy>,
}

/// Stores a new tenant.
pub async fn insert(tx: &mut Tx, tenant: &Tenant) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query("INSERT INTO tenants (id, name, is_operator, created_at, policy) VALUES ($1, $2, $3, $4, $5)")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.is_operator)
        .bind(tenant.created_at)
        .bind(&tenant.policy)
        .execute(conn)
        .await.map(|r| r.rows_affected()))
    .on_unique("a tenant with this name already exists")?;
    Ok(())
}

/// Finds a tenant by id.
pub async fn get(db: &Db, id: &str) -> Result<Tenant, DbError> {
    on_pool!(db, pool => sqlx::query_as::<_, Tenant>("SELECT id, name, is_operator, created_at, policy FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await)
    .map_err(DbError::from_fetch)
}

/// The operator tenant, if bootstrap has run.
pub async fn operator(db: &Db) -> Result<Option<Tenant>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, Tenant>(
        "SELECT id, name, is_operator, created_at, policy FROM tenants WHERE is_operator = TRUE ORDER BY id LIMIT 1")
        .fetch_optional(pool)
        .await)?)
}

/// Lists tenants in id order after `after`.
pub async fn list(db: &Db, after: Option<&str>, limit: i64) -> Result<Vec<Tenant>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, Tenant>(
        "SELECT id, name, is_operator, created_at, policy FROM tenants WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(pool)
        .await)?)
}

/// Replaces a tenant's policy.
pub async fn set_policy(tx: &mut Tx, id: &str, policy: &Json<TenantPolicy>) -> Result<(), DbError> {
    let done = on_tx!(tx, conn => sqlx::query("UPDATE tenants SET policy = $1 WHERE id = $2")
        .bind(policy)
        .bind(id)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    if done == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// Takes the tenant's row lock for the rest of `tx`, so plan caps are counted and
/// checked by one transaction at a time (on SQLite, the write lock does the same).
/// [`get`] inside `tx`.
pub async fn get_in(tx: &mut Tx, id: &str) -> Result<Tenant, DbError> {
    on_tx!(tx, conn => sqlx::query_as::<_, Tenant>(
        "SELECT id, name, is_operator, created_at, policy FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}

pub async fn lock(tx: &mut Tx, id: &str) -> Result<Tenant, DbError> {
    on_tx!(tx, conn => sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    on_tx!(tx, conn => sqlx::query_as::<_, Tenant>(
        "SELECT id, name, is_operator, created_at, policy FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}
