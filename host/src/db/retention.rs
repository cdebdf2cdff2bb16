//! Retention: deleting what has been kept long enough, in small batches.
//!
//! Per tenant: executions past their retention are deleted, and the logs of younger
//! ones past the logs' retention are emptied; audit events past theirs are deleted
//! through a purge window (the only way past the audit trail's append-only trigger).
//! For everyone: expired key-value entries, and the entries of deleted agents. Each
//! call deletes at most `batch` rows and says how many, so the caller loops.

use chrono::{DateTime, Utc};

use super::{Db, DbError, Tx};
use crate::{in_scope, on_tx};

/// Deletes up to `batch` of `tenant_id`'s executions that finished before `before`.
pub async fn executions(
    db: &Db,
    tenant_id: &str,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, DbError> {
    Ok(in_scope!(db, tenant_id, conn => sqlx::query(
        "DELETE FROM executions WHERE id IN (SELECT id FROM executions \
         WHERE tenant_id = $1 AND finished_at < $2 LIMIT $3)")
        .bind(tenant_id)
        .bind(before)
        .bind(batch)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?)
}

/// Empties the logs of up to `batch` of `tenant_id`'s executions that finished before
/// `before`.
pub async fn logs(
    db: &Db,
    tenant_id: &str,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, DbError> {
    let empty = sqlx::types::Json(Vec::<crate::runtime::LogEntry>::new());
    Ok(in_scope!(db, tenant_id, conn => sqlx::query(
        "UPDATE executions SET logs = $4 WHERE id IN (SELECT id FROM executions \
         WHERE tenant_id = $1 AND finished_at < $2 AND log_bytes > 0 LIMIT $3)")
        .bind(tenant_id)
        .bind(before)
        .bind(batch)
        .bind(&empty)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?)
}

/// Deletes up to `batch` of `tenant_id`'s audit events from before `before`, through a
/// purge window opened and closed in the same transaction.
pub async fn audit(
    db: &Db,
    tenant_id: &str,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, DbError> {
    let mut tx = db.begin(tenant_id).await?;
    if let Tx::Postgres(tx) = &mut tx {
        // The login role, not corral_app, which may neither open windows nor delete.
        sqlx::query("SET LOCAL ROLE NONE")
            .execute(&mut **tx)
            .await?;
    }
    let window = super::new_id();
    on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO audit_purge_windows (id, tenant_id, before) VALUES ($1, $2, $3)")
        .bind(&window)
        .bind(tenant_id)
        .bind(before)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    let deleted = on_tx!(&mut tx, conn => sqlx::query(
        "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
         WHERE tenant_id = $1 AND occurred_at < $2 LIMIT $3)")
        .bind(tenant_id)
        .bind(before)
        .bind(batch)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    on_tx!(&mut tx, conn => sqlx::query("DELETE FROM audit_purge_windows WHERE id = $1")
        .bind(&window)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(deleted)
}

/// Deletes up to `batch` key-value entries that expired before `now` or belong to a
/// deleted agent.
pub async fn kv(db: &Db, now: DateTime<Utc>, batch: i64) -> Result<u64, DbError> {
    Ok(
        in_scope!(db, super::Wide::Housekeeping, conn => sqlx::query(
        "DELETE FROM kv_entries WHERE (agent_id, key) IN (SELECT agent_id, key FROM kv_entries \
         WHERE expires_at <= $1 OR agent_id IN (SELECT id FROM agents WHERE deleted_at IS NOT NULL) \
         LIMIT $2)")
        .bind(now)
        .bind(batch)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?,
    )
}

/// The cluster-wide purge turn: on Postgres a session advisory lock held on a
/// connection of its own for the whole run, so one node purges at a time (and a node
/// that dies gives the turn back with its session).
pub enum Turn {
    /// Postgres: the connection holding the lock.
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    /// SQLite: one process, always its turn.
    Sqlite,
}

const LOCK: &str = "hashtext('corral.retention')";

/// Takes the turn, or `None` if another node has it.
pub async fn take_turn(db: &Db) -> Result<Option<Turn>, DbError> {
    match db {
        Db::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            let (taken,): (bool,) = sqlx::query_as(&format!("SELECT pg_try_advisory_lock({LOCK})"))
                .fetch_one(&mut *conn)
                .await?;
            Ok(taken.then_some(Turn::Postgres(conn)))
        }
        Db::Sqlite(_) => Ok(Some(Turn::Sqlite)),
    }
}

impl Turn {
    /// Gives the turn back.
    pub async fn give_back(self) {
        if let Turn::Postgres(mut conn) = self {
            let unlocked = sqlx::query(&format!("SELECT pg_advisory_unlock({LOCK})"))
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Never return a connection that may still hold the lock to the pool.
                let _ = conn.detach();
            }
        }
    }
}
