//! Idempotency keys for invocations.
//!
//! A request with an `Idempotency-Key` first *reserves* the key (one row, unique per
//! tenant and key). The execution's record and the key's completion are committed
//! together by the group-commit writer, so a retry either finds the stored response
//! or finds the key still reserved — never a response without its record.
//!
//! A reservation belongs to the node running its request (`owner`) under a lease that
//! node renews while the run lasts ([`renew`]). A retry on any node while the lease
//! holds is "in progress"; only a lapsed lease — its node died — may be taken over, and
//! then the retry runs (the first run was never recorded, so it is billed once). Every
//! key expires `ttl` after it was reserved: an expired key is free for a new request,
//! and [`purge`] deletes expired keys in the background.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Db, DbError, Tx};
use crate::{in_scope, on_tx};

/// What reserving a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// The key is new (or expired, or its node's lease lapsed): run the request.
    Reserved,
    /// The same request already completed: return this response.
    Completed(serde_json::Value),
    /// The same request is running now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// Who reserves a key, and for how long.
#[derive(Debug, Clone)]
pub struct Lease<'a> {
    /// The node that runs the request.
    pub owner: &'a str,
    /// Now.
    pub now: DateTime<Utc>,
    /// Until when the reservation holds unless renewed.
    pub until: DateTime<Utc>,
    /// How long a key lives.
    pub ttl: chrono::Duration,
}

#[derive(sqlx::FromRow)]
struct Row {
    request_hash: String,
    status: String,
    response: Option<Json<serde_json::Value>>,
    lease_expires_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// Reserves `key` for a request whose canonical form hashes to `request_hash`.
pub async fn reserve(
    db: &Db,
    tenant_id: &str,
    key: &str,
    request_hash: &str,
    lease: &Lease<'_>,
) -> Result<Reservation, DbError> {
    // Twice at most: the second time after deleting an expired key.
    for _ in 0..2 {
        let inserted = in_scope!(db, tenant_id, conn => sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, created_at, owner, \
             lease_expires_at, expires_at) VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7) ON CONFLICT DO NOTHING")
            .bind(tenant_id)
            .bind(key)
            .bind(request_hash)
            .bind(lease.now)
            .bind(lease.owner)
            .bind(lease.until)
            .bind(lease.now + lease.ttl)
            .execute(conn)
            .await.map(|r| r.rows_affected()))?;
        if inserted == 1 {
            return Ok(Reservation::Reserved);
        }
        let row = in_scope!(db, tenant_id, conn => sqlx::query_as::<_, Row>(
            "SELECT request_hash, status, response, lease_expires_at, expires_at, created_at \
             FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
            .bind(tenant_id)
            .bind(key)
            .fetch_optional(conn)
            .await)?;
        let Some(row) = row else {
            continue; // purged meanwhile
        };
        let expires_at = row.expires_at.unwrap_or(row.created_at + lease.ttl);
        if expires_at <= lease.now {
            in_scope!(db, tenant_id, conn => sqlx::query(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at = $3")
                .bind(tenant_id)
                .bind(key)
                .bind(row.created_at)
                .execute(conn)
                .await.map(|r| r.rows_affected()))?;
            continue;
        }
        if row.request_hash != request_hash {
            return Ok(Reservation::Mismatch);
        }
        if let ("completed", Some(Json(response))) = (row.status.as_str(), row.response) {
            return Ok(Reservation::Completed(response));
        }
        if row.lease_expires_at.is_some_and(|until| until > lease.now) {
            return Ok(Reservation::InProgress);
        }
        // Its node stopped renewing: take the key over, unless another retry just did.
        let taken = in_scope!(db, tenant_id, conn => sqlx::query(
            "UPDATE idempotency_keys SET status = 'pending', owner = $1, lease_expires_at = $2 \
             WHERE tenant_id = $3 AND key = $4 AND status IN ('pending', 'abandoned') \
             AND (lease_expires_at IS NULL OR lease_expires_at <= $5)")
            .bind(lease.owner)
            .bind(lease.until)
            .bind(tenant_id)
            .bind(key)
            .bind(lease.now)
            .execute(conn)
            .await.map(|r| r.rows_affected()))?;
        return Ok(if taken == 1 {
            Reservation::Reserved
        } else {
            Reservation::InProgress
        });
    }
    Ok(Reservation::InProgress)
}

/// Extends the leases of the keys `owner` is running requests for.
pub async fn renew(db: &Db, owner: &str, until: DateTime<Utc>) -> Result<u64, DbError> {
    Ok(
        in_scope!(db, super::Wide::Housekeeping, conn => sqlx::query(
        "UPDATE idempotency_keys SET lease_expires_at = $1 WHERE owner = $2 AND status = 'pending'")
        .bind(until)
        .bind(owner)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?,
    )
}

/// Deletes up to `batch` expired keys (older than `ttl` if they predate expiry);
/// returns how many.
pub async fn purge(
    db: &Db,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
    batch: i64,
) -> Result<u64, DbError> {
    Ok(
        in_scope!(db, super::Wide::Housekeeping, conn => sqlx::query(
        "DELETE FROM idempotency_keys WHERE (tenant_id, key) IN (SELECT tenant_id, key \
         FROM idempotency_keys WHERE expires_at <= $1 OR (expires_at IS NULL AND created_at <= $2) \
         LIMIT $3)")
        .bind(now)
        .bind(now - ttl)
        .bind(batch)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?,
    )
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
    in_scope!(db, tenant_id, conn => sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status = 'pending'")
        .bind(tenant_id)
        .bind(key)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}
