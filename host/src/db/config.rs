//! Agents' config values and sealed secrets, and [`DbConfigSource`], which serves them
//! to the agent's invocations.
//!
//! Secrets are stored only as [`Sealed`] ciphertext (see [`crate::secrets`]); nothing
//! here ever reads or writes a plaintext secret column, and the listing returns names
//! and times only.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Db, DbError, Tx};
use crate::runtime::capabilities::config::{ConfigSource, Unavailable};
use crate::secrets::{Sealed, SecretsKey};
use crate::{in_scope, on_tx};

/// The most config values, and separately the most secrets, one agent may have.
pub const MAX_ENTRIES: usize = 256;
/// The largest config value or secret, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// A secret as it may be shown: its name and when it was last set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// An agent's config values by name.
pub async fn values(
    db: &Db,
    tenant_id: &str,
    agent_id: &str,
) -> Result<BTreeMap<String, String>, DbError> {
    let rows: Vec<(String, String)> = in_scope!(db, tenant_id, conn => sqlx::query_as(
        "SELECT name, value FROM agent_config WHERE tenant_id = $1 AND agent_id = $2")
        .bind(tenant_id)
        .bind(agent_id)
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().collect())
}

/// One config value.
pub async fn value(
    db: &Db,
    tenant_id: &str,
    agent_id: &str,
    name: &str,
) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> = in_scope!(db, tenant_id, conn => sqlx::query_as(
        "SELECT value FROM agent_config WHERE tenant_id = $1 AND agent_id = $2 AND name = $3")
        .bind(tenant_id)
        .bind(agent_id)
        .bind(name)
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(|(value,)| value))
}

/// Replaces all of an agent's config values with `values`.
pub async fn replace_values(
    tx: &mut Tx,
    tenant_id: &str,
    agent_id: &str,
    values: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query("DELETE FROM agent_config WHERE tenant_id = $1 AND agent_id = $2")
        .bind(tenant_id)
        .bind(agent_id)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected()))?;
    for (name, value) in values {
        on_tx!(tx, conn => sqlx::query(
            "INSERT INTO agent_config (tenant_id, agent_id, name, value, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant_id)
            .bind(agent_id)
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Removes one config value; whether it existed.
pub async fn delete_value(
    tx: &mut Tx,
    tenant_id: &str,
    agent_id: &str,
    name: &str,
) -> Result<bool, DbError> {
    delete_named(tx, "agent_config", tenant_id, agent_id, name).await
}

/// Removes the row `name` of an agent from `table` (`agent_config` or `agent_secrets`).
async fn delete_named(
    tx: &mut Tx,
    table: &'static str,
    tenant_id: &str,
    agent_id: &str,
    name: &str,
) -> Result<bool, DbError> {
    let sql = format!("DELETE FROM {table} WHERE tenant_id = $1 AND agent_id = $2 AND name = $3");
    let done = on_tx!(tx, conn => sqlx::query(&sql)
        .bind(tenant_id)
        .bind(agent_id)
        .bind(name)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

/// An agent's secrets: names and times, never values.
pub async fn secrets(db: &Db, tenant_id: &str, agent_id: &str) -> Result<Vec<SecretInfo>, DbError> {
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, SecretInfo>(
        "SELECT name, updated_at FROM agent_secrets WHERE tenant_id = $1 AND agent_id = $2 ORDER BY name")
        .bind(tenant_id)
        .bind(agent_id)
        .fetch_all(conn)
        .await)?,
    )
}

/// How many secrets an agent has, and whether `name` is one of them.
pub async fn count_secrets(
    tx: &mut Tx,
    tenant_id: &str,
    agent_id: &str,
    name: &str,
) -> Result<(i64, bool), DbError> {
    let row: (i64, i64) = on_tx!(tx, conn => sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN name = $3 THEN 1 ELSE 0 END), 0) \
         FROM agent_secrets WHERE tenant_id = $1 AND agent_id = $2")
        .bind(tenant_id)
        .bind(agent_id)
        .bind(name)
        .fetch_one(conn)
        .await)?;
    Ok((row.0, row.1 > 0))
}

/// Stores a sealed secret, replacing one of the same name.
pub async fn put_secret(
    tx: &mut Tx,
    tenant_id: &str,
    agent_id: &str,
    name: &str,
    sealed: &Sealed,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO agent_secrets (tenant_id, agent_id, name, ciphertext, nonce, key_id, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (agent_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, \
         nonce = excluded.nonce, key_id = excluded.key_id, updated_at = excluded.updated_at")
        .bind(tenant_id)
        .bind(agent_id)
        .bind(name)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .bind(&sealed.key_id)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// One sealed secret.
pub async fn sealed_secret(
    db: &Db,
    tenant_id: &str,
    agent_id: &str,
    name: &str,
) -> Result<Option<Sealed>, DbError> {
    let row: Option<(Vec<u8>, Vec<u8>, String)> = in_scope!(db, tenant_id, conn => sqlx::query_as(
        "SELECT ciphertext, nonce, key_id FROM agent_secrets WHERE tenant_id = $1 AND agent_id = $2 AND name = $3")
        .bind(tenant_id)
        .bind(agent_id)
        .bind(name)
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(|(ciphertext, nonce, key_id)| Sealed {
        ciphertext,
        nonce,
        key_id,
    }))
}

/// Removes one secret; whether it existed.
pub async fn delete_secret(
    tx: &mut Tx,
    tenant_id: &str,
    agent_id: &str,
    name: &str,
) -> Result<bool, DbError> {
    delete_named(tx, "agent_secrets", tenant_id, agent_id, name).await
}

/// Removes all of an agent's config values and secrets (when the agent is deleted).
pub async fn delete_all(tx: &mut Tx, tenant_id: &str, agent_id: &str) -> Result<(), DbError> {
    for sql in [
        "DELETE FROM agent_config WHERE tenant_id = $1 AND agent_id = $2",
        "DELETE FROM agent_secrets WHERE tenant_id = $1 AND agent_id = $2",
    ] {
        on_tx!(tx, conn => sqlx::query(sql)
            .bind(tenant_id)
            .bind(agent_id)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Serves one agent's config values and secrets to its invocations, reading each
/// when the guest asks for it and opening secrets with the server's key.
pub struct DbConfigSource {
    db: Db,
    tenant_id: String,
    agent_id: String,
    key: Option<SecretsKey>,
}

impl DbConfigSource {
    /// The source for agent `agent_id` of `tenant_id`; without a key, secrets are
    /// unavailable.
    pub fn new(db: Db, tenant_id: &str, agent_id: &str, key: Option<SecretsKey>) -> Self {
        DbConfigSource {
            db,
            tenant_id: tenant_id.into(),
            agent_id: agent_id.into(),
            key,
        }
    }

    fn failed(&self, what: &str, e: DbError) -> Unavailable {
        tracing::error!(error = %e, agent_id = %self.agent_id, "reading {what} failed");
        Unavailable(format!(
            "the host could not read the {what}; try again later"
        ))
    }
}

#[async_trait::async_trait]
impl ConfigSource for DbConfigSource {
    async fn value(&self, name: &str) -> Result<Option<String>, Unavailable> {
        value(&self.db, &self.tenant_id, &self.agent_id, name)
            .await
            .map_err(|e| self.failed("config value", e))
    }

    async fn secret(&self, name: &str) -> Result<Option<String>, Unavailable> {
        let Some(key) = &self.key else {
            return Err(Unavailable(
                "this server has no secrets key (CORRAL_SECRETS_KEY)".into(),
            ));
        };
        let sealed = sealed_secret(&self.db, &self.tenant_id, &self.agent_id, name)
            .await
            .map_err(|e| self.failed("secret", e))?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        key.open(&self.agent_id, name, &sealed)
            .map(Some)
            .map_err(|e| {
                // The name and why, never the value.
                tracing::error!(error = %e, agent_id = %self.agent_id, secret = %name, "a stored secret could not be opened");
                Unavailable(format!("the secret {name:?} could not be decrypted by this server"))
            })
    }
}
