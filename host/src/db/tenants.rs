//! Tenants: the unit of isolation. The operator tenant (created at bootstrap) may
//! manage the others.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, DbError, ResultExt, Tx};
use crate::{on_pool, on_tx};

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Tenant {
    /// Its id.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// Whether this is the operator tenant, whose admins manage all tenants.
    pub is_operator: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Stores a new tenant.
pub async fn insert(tx: &mut Tx, tenant: &Tenant) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query("INSERT INTO tenants (id, name, is_operator, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&tenant.id)
        .bind(&tenant.name)
        .bind(tenant.is_operator)
        .bind(tenant.created_at)
        .execute(conn)
        .await.map(|r| r.rows_affected()))
    .on_unique("a tenant with this name already exists")?;
    Ok(())
}

/// Finds a tenant by id.
pub async fn get(db: &Db, id: &str) -> Result<Tenant, DbError> {
    on_pool!(db, pool => sqlx::query_as::<_, Tenant>("SELECT id, name, is_operator, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await)
    .map_err(DbError::from_fetch)
}

/// The operator tenant, if bootstrap has run.
pub async fn operator(db: &Db) -> Result<Option<Tenant>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, Tenant>(
        "SELECT id, name, is_operator, created_at FROM tenants WHERE is_operator = TRUE ORDER BY id LIMIT 1")
        .fetch_optional(pool)
        .await)?)
}

/// Lists tenants in id order after `after`.
pub async fn list(db: &Db, after: Option<&str>, limit: i64) -> Result<Vec<Tenant>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, Tenant>(
        "SELECT id, name, is_operator, created_at FROM tenants WHERE id > $1 ORDER BY id LIMIT $2")
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(pool)
        .await)?)
}
