//! Schedules and the occurrences they handled (see [`crate::schedules`]).
//!
//! An occurrence is handled exactly once across nodes: the ticker that handles it locks
//! the schedule (`FOR UPDATE SKIP LOCKED` on Postgres, so tickers never wait on each
//! other), inserts the occurrence under the primary key (schedule, occurrence time) and
//! moves `next_at` on, fenced on its old value, in the transaction that enqueues the
//! occurrence's work.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::{Db, DbError, Tx};
use crate::{in_scope, on_tx};

/// One schedule as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScheduleRow {
    /// Its id (UUIDv7).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone it is evaluated in.
    pub timezone: String,
    /// What each occurrence enqueues (a [`crate::schedules::Target`]).
    pub target: Json<Value>,
    /// `run_once` or `skip`.
    pub missed: String,
    /// `allow` or `forbid`.
    pub overlap: String,
    /// Paused schedules handle no occurrence.
    pub paused: bool,
    /// The next occurrence not handled yet.
    pub next_at: DateTime<Utc>,
    /// The API key that created it (its work runs as that key).
    pub actor_key_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant_id, cron, timezone, target, missed, overlap, paused, next_at, \
    actor_key_id, created_at, updated_at";

/// One handled occurrence.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OccurrenceRow {
    /// The schedule.
    pub schedule_id: String,
    /// The occurrence's time.
    pub occurrence_at: DateTime<Utc>,
    /// The tenant.
    pub tenant_id: String,
    /// `enqueued`, `skipped_overlap`, `missed` or `failed`.
    pub outcome: String,
    /// The task it enqueued.
    pub task_id: Option<String>,
    /// The workflow it started.
    pub workflow_id: Option<String>,
    /// Why it was not enqueued.
    pub error: Option<String>,
    /// The node that handled it.
    pub node: String,
    /// When it was handled.
    pub created_at: DateTime<Utc>,
}

/// Inserts a schedule.
pub async fn insert(tx: &mut Tx, s: &ScheduleRow) -> Result<(), DbError> {
    let sql = format!(
        "INSERT INTO schedules ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    on_tx!(tx, conn => sqlx::query(&sql)
        .bind(&s.id)
        .bind(&s.tenant_id)
        .bind(&s.cron)
        .bind(&s.timezone)
        .bind(&s.target)
        .bind(&s.missed)
        .bind(&s.overlap)
        .bind(s.paused)
        .bind(s.next_at)
        .bind(&s.actor_key_id)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// One schedule of `tenant_id`.
pub async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<ScheduleRow, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND id = $2");
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, ScheduleRow>(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}

/// A tenant's schedules, newest first, before the cursor id.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<ScheduleRow>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, ScheduleRow>(&sql)
        .bind(tenant_id)
        .bind(before.unwrap_or("~"))
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// Pauses or resumes a schedule (resuming from `next_at`); whether it exists.
pub async fn set_paused(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    paused: bool,
    next_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let updated = on_tx!(tx, conn => sqlx::query(
        "UPDATE schedules SET paused = $1, next_at = coalesce($2, next_at), updated_at = $3 \
         WHERE tenant_id = $4 AND id = $5")
        .bind(paused)
        .bind(next_at)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(updated == 1)
}

/// Deletes a schedule and its occurrences; whether it existed.
pub async fn delete(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<bool, DbError> {
    on_tx!(tx, conn => sqlx::query(
        "DELETE FROM schedule_occurrences WHERE tenant_id = $1 AND schedule_id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    let deleted = on_tx!(tx, conn => sqlx::query(
        "DELETE FROM schedules WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(deleted == 1)
}

/// Schedules (with their tenants) whose next occurrence has come, across tenants.
pub async fn due(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(String, String)>, DbError> {
    Ok(
        in_scope!(db, super::Wide::Orchestration, conn => sqlx::query_as(
        "SELECT id, tenant_id FROM schedules WHERE NOT paused AND next_at <= $1 \
         ORDER BY next_at LIMIT $2")
        .bind(now)
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// A due schedule, locked until `tx` ends; `None` if it is not due (any more) or
/// another node holds it.
pub async fn lock_due(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<ScheduleRow>, DbError> {
    let lock = match tx {
        Tx::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        Tx::Sqlite(_) => "",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND id = $2 AND NOT paused \
         AND next_at <= $3{lock}"
    );
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, ScheduleRow>(&sql)
        .bind(tenant_id)
        .bind(id)
        .bind(now)
        .fetch_optional(conn)
        .await)?)
}

/// Records an occurrence unless it is recorded already; whether this call did.
pub async fn insert_occurrence(tx: &mut Tx, o: &OccurrenceRow) -> Result<bool, DbError> {
    let inserted = on_tx!(tx, conn => sqlx::query(
        "INSERT INTO schedule_occurrences (schedule_id, occurrence_at, tenant_id, outcome, task_id, \
         workflow_id, error, node, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (schedule_id, occurrence_at) DO NOTHING")
        .bind(&o.schedule_id)
        .bind(o.occurrence_at)
        .bind(&o.tenant_id)
        .bind(&o.outcome)
        .bind(&o.task_id)
        .bind(&o.workflow_id)
        .bind(&o.error)
        .bind(&o.node)
        .bind(o.created_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(inserted == 1)
}

/// Fills in what an occurrence enqueued.
pub async fn set_occurrence_work(tx: &mut Tx, o: &OccurrenceRow) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "UPDATE schedule_occurrences SET outcome = $1, task_id = $2, workflow_id = $3, error = $4 \
         WHERE schedule_id = $5 AND occurrence_at = $6")
        .bind(&o.outcome)
        .bind(&o.task_id)
        .bind(&o.workflow_id)
        .bind(&o.error)
        .bind(&o.schedule_id)
        .bind(o.occurrence_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Whether the work of the schedule's latest enqueued occurrence is still under way.
pub async fn previous_running(tx: &mut Tx, schedule_id: &str) -> Result<bool, DbError> {
    let row: Option<(Option<String>, Option<String>)> = on_tx!(tx, conn => sqlx::query_as(
        "SELECT t.state, w.state FROM schedule_occurrences o \
         LEFT JOIN tasks t ON t.id = o.task_id LEFT JOIN workflows w ON w.id = o.workflow_id \
         WHERE o.schedule_id = $1 AND o.outcome = 'enqueued' \
         ORDER BY o.occurrence_at DESC LIMIT 1")
        .bind(schedule_id)
        .fetch_optional(conn)
        .await)?;
    Ok(match row {
        Some((Some(task), _)) => !matches!(task.as_str(), "succeeded" | "failed" | "cancelled"),
        Some((None, Some(workflow))) => matches!(workflow.as_str(), "running" | "compensating"),
        _ => false,
    })
}

/// Moves `next_at` on, fenced on its old value; whether it moved.
pub async fn move_next(
    tx: &mut Tx,
    id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let updated = on_tx!(tx, conn => sqlx::query(
        "UPDATE schedules SET next_at = $1, updated_at = $2 WHERE id = $3 AND next_at = $4")
        .bind(to)
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(updated == 1)
}

/// A schedule's latest occurrences, newest first.
pub async fn occurrences(
    db: &Db,
    tenant_id: &str,
    id: &str,
    limit: i64,
) -> Result<Vec<OccurrenceRow>, DbError> {
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, OccurrenceRow>(
        "SELECT schedule_id, occurrence_at, tenant_id, outcome, task_id, workflow_id, error, node, \
         created_at FROM schedule_occurrences WHERE tenant_id = $1 AND schedule_id = $2 \
         ORDER BY occurrence_at DESC LIMIT $3")
        .bind(tenant_id)
        .bind(id)
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}
