//! Agents' key-value state (`kv_entries`): the [`DbKvStore`] that serves
//! `corral:agent/kv` under `corral serve`, and what operators list and clear.
//!
//! Every statement runs in a transaction scoped to the tenant (row-level security on
//! Postgres) and names the agent. A `set` checks the grant's `max_keys` and
//! `max_total_bytes` in the same transaction as its write, after taking the agent's
//! lock — a transaction-scoped advisory lock on Postgres; on SQLite the transaction's
//! first statement is a write, which takes the database's write lock — so two
//! concurrent sets cannot both pass a limit that only one fits under.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Db, DbError, Tx};
use crate::on_tx;
use crate::policy::KvGrant;
use crate::quota::clock::Clock;
use crate::runtime::capabilities::kv::{KvStore, KvStoreError, check_totals, prefix_end};

/// The key-value state of one agent of one tenant, in the database.
#[derive(Clone)]
pub struct DbKvStore {
    db: Db,
    tenant_id: String,
    agent_id: String,
    clock: Arc<dyn Clock>,
}

impl DbKvStore {
    /// The state of agent `agent_id` of tenant `tenant_id`, with TTLs on `clock`.
    pub fn new(db: Db, tenant_id: &str, agent_id: &str, clock: Arc<dyn Clock>) -> DbKvStore {
        DbKvStore {
            db,
            tenant_id: tenant_id.into(),
            agent_id: agent_id.into(),
            clock,
        }
    }

    async fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>, DbError> {
        let now = self.clock.now();
        let mut tx = self.db.begin(self.tenant_id.as_str()).await?;
        let row: Option<(Vec<u8>, Option<DateTime<Utc>>)> = on_tx!(&mut tx, conn => sqlx::query_as(
            "SELECT value, expires_at FROM kv_entries WHERE agent_id = $1 AND key = $2 AND tenant_id = $3")
            .bind(&self.agent_id)
            .bind(key)
            .bind(&self.tenant_id)
            .fetch_optional(conn)
            .await)?;
        match row {
            Some((_, Some(expires_at))) if expires_at <= now => {
                // Lazily cleaned: the first reader past the TTL removes it.
                on_tx!(&mut tx, conn => sqlx::query(
                    "DELETE FROM kv_entries WHERE agent_id = $1 AND key = $2 AND expires_at <= $3")
                    .bind(&self.agent_id)
                    .bind(key)
                    .bind(now)
                    .execute(conn)
                    .await
                    .map(|r| r.rows_affected()))?;
                tx.commit().await?;
                Ok(None)
            }
            Some((value, _)) => Ok(Some(value)),
            None => Ok(None),
        }
    }

    async fn try_set(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<DateTime<Utc>>,
        limits: &KvGrant,
    ) -> Result<Result<(), KvStoreError>, DbError> {
        let now = self.clock.now();
        let mut tx = self.db.begin(self.tenant_id.as_str()).await?;
        if let Tx::Postgres(tx) = &mut tx {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("kv:{}", self.agent_id))
                .execute(&mut **tx)
                .await?;
        }
        purge_expired(&mut tx, &self.agent_id, now).await?;
        let (keys, bytes): (i64, i64) = on_tx!(&mut tx, conn => sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM kv_entries \
             WHERE agent_id = $1 AND key <> $2")
            .bind(&self.agent_id)
            .bind(key)
            .fetch_one(conn)
            .await)?;
        let size = (key.len() + value.len()) as u64;
        if let Err(refused) = check_totals(keys as u64, bytes as u64, size, limits) {
            return Ok(Err(refused));
        }
        on_tx!(&mut tx, conn => sqlx::query(
            "INSERT INTO kv_entries (tenant_id, agent_id, key, value, size_bytes, expires_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (agent_id, key) DO UPDATE SET value = excluded.value, \
             size_bytes = excluded.size_bytes, expires_at = excluded.expires_at, \
             updated_at = excluded.updated_at")
            .bind(&self.tenant_id)
            .bind(&self.agent_id)
            .bind(key)
            .bind(value)
            .bind(size as i64)
            .bind(expires_at)
            .bind(now)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn try_delete(&self, key: &str) -> Result<bool, DbError> {
        let now = self.clock.now();
        let mut tx = self.db.begin(self.tenant_id.as_str()).await?;
        let removed: Option<(Option<DateTime<Utc>>,)> = on_tx!(&mut tx, conn => sqlx::query_as(
            "DELETE FROM kv_entries WHERE agent_id = $1 AND key = $2 RETURNING expires_at")
            .bind(&self.agent_id)
            .bind(key)
            .fetch_optional(conn)
            .await)?;
        tx.commit().await?;
        Ok(matches!(removed, Some((expires_at,)) if expires_at.is_none_or(|at| at > now)))
    }

    async fn try_list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, DbError> {
        let now = self.clock.now();
        let mut tx = self.db.begin_read(self.tenant_id.as_str()).await?;
        let entries = list(
            &mut tx,
            &self.agent_id,
            prefix,
            after,
            i64::from(limit),
            now,
        )
        .await?;
        Ok(entries.into_iter().map(|e| e.key).collect())
    }
}

fn unavailable(e: DbError) -> KvStoreError {
    tracing::error!(error = %e, "the key-value store failed");
    KvStoreError::Unavailable("the key-value store failed; try again later".into())
}

#[async_trait]
impl KvStore for DbKvStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvStoreError> {
        self.try_get(key).await.map_err(unavailable)
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<DateTime<Utc>>,
        limits: &KvGrant,
    ) -> Result<(), KvStoreError> {
        self.try_set(key, value, expires_at, limits)
            .await
            .map_err(unavailable)?
    }

    async fn delete(&self, key: &str) -> Result<bool, KvStoreError> {
        self.try_delete(key).await.map_err(unavailable)
    }

    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, KvStoreError> {
        self.try_list(prefix, after, limit)
            .await
            .map_err(unavailable)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// Removes an agent's entries that expired at or before `now`.
async fn purge_expired(tx: &mut Tx, agent_id: &str, now: DateTime<Utc>) -> Result<u64, DbError> {
    Ok(on_tx!(tx, conn => sqlx::query(
        "DELETE FROM kv_entries WHERE agent_id = $1 AND expires_at IS NOT NULL AND expires_at <= $2")
        .bind(agent_id)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?)
}

/// One entry as operators see it, with its value only when asked for.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// Bytes of key and value.
    pub size_bytes: i64,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
    /// When it expires; never when `None`.
    pub expires_at: Option<DateTime<Utc>>,
    /// The value (only from [`list_with_values`]).
    #[sqlx(default)]
    pub value: Option<Vec<u8>>,
}

/// Up to `limit` unexpired entries of an agent whose keys start with `prefix`, in byte
/// order, after the key `after`; without their values.
pub async fn list(
    tx: &mut Tx,
    agent_id: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<KvEntry>, DbError> {
    select(tx, "NULL", agent_id, prefix, after, limit, now).await
}

/// [`list`], with the values.
pub async fn list_with_values(
    tx: &mut Tx,
    agent_id: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<KvEntry>, DbError> {
    select(tx, "value", agent_id, prefix, after, limit, now).await
}

async fn select(
    tx: &mut Tx,
    value: &str,
    agent_id: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<KvEntry>, DbError> {
    // The prefix as a range of keys, so the primary key's index answers it.
    let end = prefix_end(prefix);
    let value = match (&*tx, value) {
        (Tx::Postgres(_), "NULL") => "CAST(NULL AS BYTEA) AS value",
        (Tx::Sqlite(_), "NULL") => "NULL AS value",
        _ => "value",
    };
    let sql = format!(
        "SELECT key, size_bytes, updated_at, expires_at, {value} FROM kv_entries \
         WHERE agent_id = $1 AND key >= $2 AND ($3 IS NULL OR key < $3) \
         AND ($4 IS NULL OR key > $4) AND (expires_at IS NULL OR expires_at > $5) \
         ORDER BY key LIMIT $6"
    );
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, KvEntry>(&sql)
        .bind(agent_id)
        .bind(prefix)
        .bind(end)
        .bind(after)
        .bind(now)
        .bind(limit)
        .fetch_all(conn)
        .await)?)
}

/// Removes an agent's entries whose keys start with `prefix` (all of them for an empty
/// one); how many unexpired entries went.
pub async fn clear(
    tx: &mut Tx,
    agent_id: &str,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<u64, DbError> {
    purge_expired(tx, agent_id, now).await?;
    let end = prefix_end(prefix);
    Ok(on_tx!(tx, conn => sqlx::query(
        "DELETE FROM kv_entries WHERE agent_id = $1 AND key >= $2 AND ($3 IS NULL OR key < $3)")
        .bind(agent_id)
        .bind(prefix)
        .bind(end)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?)
}

/// Removes one key of an agent; whether it existed and had not expired.
pub async fn delete(
    tx: &mut Tx,
    agent_id: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let removed: Option<(Option<DateTime<Utc>>,)> = on_tx!(tx, conn => sqlx::query_as(
        "DELETE FROM kv_entries WHERE agent_id = $1 AND key = $2 RETURNING expires_at")
        .bind(agent_id)
        .bind(key)
        .fetch_optional(conn)
        .await)?;
    Ok(matches!(removed, Some((expires_at,)) if expires_at.is_none_or(|at| at > now)))
}
