//! Idempotency keys for invocations.
//!
//! A request with an `Idempotency-Key` first *reserves* the key (one row, unique per
//! tenant and key). The execution's record and the key's completion are committed
//! together by the group-commit writer, so a retry either finds the stored response
//! or finds the key still reserved — never a response without its record. Reservations
//! left `pending` by a crash are marked `abandoned` at start; the original run was
//! never acknowledged, so a retry may run it again.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Db, DbError, Tx, now};
use crate::{on_pool, on_tx};

/// What reserving a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The key is new (or was abandoned): run the request.
    Reserved,
    /// The same request already completed: return this response.
    Completed(serde_json::Value),
    /// The same request is running now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct Row {
    request_hash: String,
    status: String,
    response: Option<Json<serde_json::Value>>,
}

/// Reserves `key` for a request whose canonical form hashes to `request_hash`.
pub async fn reserve(
    db: &Db,
    tenant_id: &str,
    key: &str,
    request_hash: &str,
) -> Result<Reservation, DbError> {
    let inserted = on_pool!(db, pool => sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, created_at) \
         VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT DO NOTHING")
        .bind(tenant_id)
        .bind(key)
        .bind(request_hash)
        .bind(now())
        .execute(pool)
        .await.map(|r| r.rows_affected()))?;
    if inserted == 1 {
        return Ok(Reservation::Reserved);
    }
    let row = on_pool!(db, pool => sqlx::query_as::<_, Row>(
        "SELECT request_hash, status, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
        .bind(tenant_id)
        .bind(key)
        .fetch_one(pool)
        .await)
    .map_err(DbError::from_fetch)?;
    if row.request_hash != request_hash {
        return Ok(Reservation::Mismatch);
    }
    match (row.status.as_str(), row.response) {
        ("completed", Some(Json(response))) => Ok(Reservation::Completed(response)),
        ("abandoned", _) => {
            // Take the abandoned key over, unless another retry just did.
            let taken = on_pool!(db, pool => sqlx::query(
                "UPDATE idempotency_keys SET status = 'pending', created_at = $1 \
                 WHERE tenant_id = $2 AND key = $3 AND status = 'abandoned'")
                .bind(now())
                .bind(tenant_id)
                .bind(key)
                .execute(pool)
                .await.map(|r| r.rows_affected()))?;
            Ok(if taken == 1 {
                Reservation::Reserved
            } else {
                Reservation::InProgress
            })
        }
        _ => Ok(Reservation::InProgress),
    }
}

/// Marks the key completed with its response, in the writer's transaction.
pub async fn complete(
    tx: &mut Tx,
    tenant_id: &str,
    key: &str,
    execution_id: &str,
    response: &serde_json::Value,
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "UPDATE idempotency_keys SET status = 'completed', execution_id = $1, response = $2 \
         WHERE tenant_id = $3 AND key = $4")
        .bind(execution_id)
        .bind(Json(response))
        .bind(tenant_id)
        .bind(key)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Drops a reservation whose request failed before anything ran.
pub async fn release(db: &Db, tenant_id: &str, key: &str) -> Result<(), DbError> {
    on_pool!(db, pool => sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status = 'pending'")
        .bind(tenant_id)
        .bind(key)
        .execute(pool)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Marks reservations still pending from before `started` as abandoned (run at start).
pub async fn abandon_stale(db: &Db, started: DateTime<Utc>) -> Result<u64, DbError> {
    let done = on_pool!(db, pool => sqlx::query(
        "UPDATE idempotency_keys SET status = 'abandoned' WHERE status = 'pending' AND created_at < $1")
        .bind(started)
        .execute(pool)
        .await.map(|r| r.rows_affected()))?;
    Ok(done)
}
