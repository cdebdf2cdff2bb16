//! API keys. Only a SHA-256 hash of each key is stored; a short prefix is kept to
//! show operators which key is which. Keys are 256 random bits, so a fast hash is the
//! right tool (no password-stretching needed).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Db, DbError, Tx, new_id, now};
use crate::{in_scope, on_tx};

/// What a key may do. Each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads agents, executions, costs and audit events.
    Viewer,
    /// Also uploads versions and invokes agents.
    Developer,
    /// Also manages agents' policies, keys and (in the operator tenant) tenants.
    Admin,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "developer" => Some(Role::Developer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A stored key (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// A label chosen by whoever created it.
    pub name: String,
    /// The first characters of the secret, e.g. `crl_3f9a1c`.
    pub prefix: String,
    /// `admin`, `developer` or `viewer`.
    pub role: String,
    /// The key that created it (none for the bootstrap key).
    pub created_by: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last authenticated a request.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// The key's role.
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Viewer)
    }
}

const COLUMNS: &str =
    "id, tenant_id, name, prefix, role, created_by, created_at, last_used_at, revoked_at";

/// A fresh secret: `crl_` and 64 hex digits.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("crl_{}", hex::encode(bytes))
}

/// The stored hash of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The part of a secret that is shown: `crl_` and 8 hex digits.
pub fn prefix_of(secret: &str) -> String {
    secret.chars().take(12).collect()
}

/// A new key record for `secret` (not yet stored).
pub fn new_key(
    tenant_id: &str,
    name: &str,
    role: Role,
    secret: &str,
    created_by: Option<&str>,
) -> ApiKey {
    ApiKey {
        id: new_id(),
        tenant_id: tenant_id.into(),
        name: name.into(),
        prefix: prefix_of(secret),
        role: role.as_str().into(),
        created_by: created_by.map(Into::into),
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    }
}

/// Stores `key`, whose secret is `secret` (only its hash is kept).
pub async fn insert(tx: &mut Tx, key: &ApiKey, secret: &str) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, role, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(hash_secret(secret))
        .bind(&key.role)
        .bind(&key.created_by)
        .bind(key.created_at)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The live (not revoked) key with this secret.
pub async fn authenticate(db: &Db, secret: &str) -> Result<Option<ApiKey>, DbError> {
    authenticate_hash(db, &hash_secret(secret)).await
}

/// The live key whose secret hashes to `hash`.
pub async fn authenticate_hash(db: &Db, hash: &str) -> Result<Option<ApiKey>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = $1 AND revoked_at IS NULL");
    Ok(
        in_scope!(db, super::Wide::Authentication, conn => sqlx::query_as::<_, ApiKey>(&sql)
        .bind(hash)
        .fetch_optional(conn)
        .await)?,
    )
}

/// Records that a key was used, at most once a minute per key to keep
/// authentication off the write path. Returns whether it wrote.
pub async fn touch(db: &Db, key: &ApiKey) -> Result<bool, DbError> {
    let now = now();
    if key
        .last_used_at
        .is_some_and(|t| now - t < chrono::Duration::seconds(60))
    {
        return Ok(false);
    }
    in_scope!(db, key.tenant_id.as_str(), conn => sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&key.id)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    Ok(true)
}

/// Lists a tenant's keys after `after`.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ApiKey>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, ApiKey>(&sql)
        .bind(tenant_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// One of a tenant's keys.
pub async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<ApiKey, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2");
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, ApiKey>(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}

/// Revokes a key; revoking twice keeps the first time. Returns the key after.
pub async fn revoke(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<ApiKey, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2");
    on_tx!(tx, conn => sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
        .bind(now())
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    on_tx!(tx, conn => sqlx::query_as::<_, ApiKey>(&sql).bind(tenant_id).bind(id).fetch_one(conn).await)
        .map_err(DbError::from_fetch)
}

/// Whether any key exists at all (bootstrap has run).
pub async fn any_exist(db: &Db) -> Result<bool, DbError> {
    let row: Option<(String,)> = in_scope!(db, super::Wide::Bootstrap, conn => sqlx::query_as("SELECT id FROM api_keys LIMIT 1")
        .fetch_optional(conn)
        .await)?;
    Ok(row.is_some())
}
