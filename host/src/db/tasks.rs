//! Tasks, their dependencies and attempts: submitted by the API, claimed and completed
//! by the workers of every node (see [`crate::tasks`]).
//!
//! Claiming on Postgres takes a small batch with `FOR UPDATE SKIP LOCKED` over the
//! `tasks_ready` partial index, so nodes never wait on each other's claims, and commits
//! before any guest runs. SQLite has one writer, so a plain `UPDATE … RETURNING` is the
//! same claim. Every write about a running attempt is fenced on `(id, attempts, state =
//! 'running')`: once another node took the task over (its `attempts` moved on), a stale
//! worker's write changes nothing.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::{Db, DbError, SqliteScript, Tx};
use crate::policy::LimitOverrides;
use crate::tasks::{Backoff, Next, TaskCompletion, TaskError, TaskState};
use crate::{in_scope, on_tx};

/// One task as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskRow {
    /// Its id (UUIDv7: ordered by submission).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The agent.
    pub agent_id: String,
    /// The agent's name at submission.
    pub agent_name: String,
    /// The action.
    pub action: String,
    /// The input, as JSON text.
    pub input: String,
    /// Higher runs first.
    pub priority: i32,
    /// Its [`TaskState`], by name.
    pub state: String,
    /// When it may next start.
    pub run_at: DateTime<Utc>,
    /// Per-attempt limits.
    pub limits: Json<LimitOverrides>,
    /// Attempts in all.
    pub max_attempts: i32,
    /// Delay between attempts.
    pub backoff: Json<Backoff>,
    /// Whether a timed-out attempt is retried.
    pub retry_timeouts: bool,
    /// Whether a spent budget waits for its renewal instead of failing the task.
    pub wait_for_budget: bool,
    /// Attempts started.
    pub attempts: i32,
    /// Parents that have not succeeded yet.
    pub deps_pending: i32,
    /// Tasks that depend on this one (so its end need not look for any when none do).
    pub dependants: i32,
    /// The submitter's correlation id.
    pub correlation_id: Option<String>,
    /// The submission's idempotency key.
    pub idempotency_key: Option<String>,
    /// The canonical submission's hash, to tell a retry from a reuse of the key.
    pub request_hash: Option<String>,
    /// The API key that submitted it.
    pub actor_key_id: Option<String>,
    /// The execution that submitted it, if an agent did.
    pub parent_execution_id: Option<String>,
    /// The root of that execution's call tree.
    pub root_execution_id: Option<String>,
    /// The node running it.
    pub lease_owner: Option<String>,
    /// When that node's claim lapses unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Cancellation was asked for while it ran.
    pub cancel_requested: bool,
    /// The last attempt's outcome.
    pub outcome: Option<String>,
    /// The full output of the attempt that succeeded (JSON text).
    pub result: Option<String>,
    /// Why it failed, was cancelled, or is being retried.
    pub error: Option<Json<TaskError>>,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The workflow this task is a step (or compensation) of.
    pub workflow_id: Option<String>,
    /// The span it was submitted from (W3C `traceparent`): its attempts continue that
    /// trace.
    pub traceparent: Option<String>,
}

impl TaskRow {
    /// The state, typed.
    pub fn state(&self) -> TaskState {
        TaskState::parse(&self.state).unwrap_or(TaskState::Failed)
    }
}

const COLUMNS: &str = "id, tenant_id, agent_id, agent_name, action, input, priority, state, run_at, limits, \
    max_attempts, backoff, retry_timeouts, wait_for_budget, attempts, deps_pending, dependants, correlation_id, \
    idempotency_key, request_hash, actor_key_id, parent_execution_id, root_execution_id, lease_owner, \
    lease_expires_at, cancel_requested, outcome, result, error, created_at, updated_at, finished_at, \
    workflow_id, traceparent";

const COLUMN_COUNT: usize = 34;

/// One attempt as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AttemptRow {
    /// The task.
    pub task_id: String,
    /// 1 for the first.
    pub attempt: i32,
    /// The execution it ran as (no record exists for an attempt that never ran).
    pub execution_id: String,
    /// The node that ran it.
    pub node: String,
    /// When it was claimed.
    pub started_at: DateTime<Utc>,
    /// When its outcome was recorded.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its outcome, once recorded.
    pub outcome: Option<String>,
}

/// Binds a [`TaskRow`]'s columns, in [`COLUMNS`]' order.
macro_rules! bind_task {
    ($query:expr, $task:expr) => {
        $query
            .bind(&$task.id)
            .bind(&$task.tenant_id)
            .bind(&$task.agent_id)
            .bind(&$task.agent_name)
            .bind(&$task.action)
            .bind(&$task.input)
            .bind($task.priority)
            .bind(&$task.state)
            .bind($task.run_at)
            .bind(&$task.limits)
            .bind($task.max_attempts)
            .bind(&$task.backoff)
            .bind($task.retry_timeouts)
            .bind($task.wait_for_budget)
            .bind($task.attempts)
            .bind($task.deps_pending)
            .bind($task.dependants)
            .bind(&$task.correlation_id)
            .bind(&$task.idempotency_key)
            .bind(&$task.request_hash)
            .bind(&$task.actor_key_id)
            .bind(&$task.parent_execution_id)
            .bind(&$task.root_execution_id)
            .bind(&$task.lease_owner)
            .bind($task.lease_expires_at)
            .bind($task.cancel_requested)
            .bind(&$task.outcome)
            .bind(&$task.result)
            .bind(&$task.error)
            .bind($task.created_at)
            .bind($task.updated_at)
            .bind($task.finished_at)
            .bind(&$task.workflow_id)
            .bind(&$task.traceparent)
    };
}

/// Inserts a task and its dependency edges.
pub async fn insert(tx: &mut Tx, task: &TaskRow, depends_on: &[String]) -> Result<(), DbError> {
    let sql = format!(
        "INSERT INTO tasks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34)"
    );
    on_tx!(tx, conn => bind_task!(sqlx::query(&sql), task)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    for parent in depends_on {
        on_tx!(tx, conn => sqlx::query(
            "INSERT INTO task_dependencies (task_id, depends_on, tenant_id) VALUES ($1, $2, $3)")
            .bind(&task.id)
            .bind(parent)
            .bind(&task.tenant_id)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
        on_tx!(tx, conn => sqlx::query(
            "UPDATE tasks SET dependants = dependants + 1 WHERE id = $1")
            .bind(parent)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Inserts tasks that depend on none: on SQLite, several rows a statement (see
/// [`push_insert`]); on Postgres, one prepared statement a row.
pub async fn insert_all(tx: &mut Tx, rows: &[TaskRow]) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(_) => {
            for row in rows {
                insert(tx, row, &[]).await?;
            }
            Ok(())
        }
        Tx::Sqlite(conn) => push_insert(SqliteScript::default(), rows).run(conn).await,
    }
}

/// Adds to `script` the inserts of `rows`, tasks that depend on none (SQLite): a
/// statement a chunk of up to 256, padded (see [`SqliteScript::padded_values`]).
/// 34 parameters a row; SQLite allows 32,766 a statement.
pub(crate) fn push_insert<'q>(
    mut script: SqliteScript<'q>,
    rows: &'q [TaskRow],
) -> SqliteScript<'q> {
    for chunk in rows.chunks(256) {
        script.push(&format!(
            "INSERT INTO tasks ({COLUMNS}) SELECT * FROM (VALUES {}) WHERE column1 IS NOT NULL",
            SqliteScript::padded_values(chunk.len(), COLUMN_COUNT)
        ));
        for task in chunk {
            script = bind_task!(script, task);
        }
        script = script.bind_padding(chunk.len(), COLUMN_COUNT);
    }
    script
}

/// The states of `ids` among `tenant_id`'s tasks (missing ones are left out). On
/// Postgres the rows are locked (`FOR SHARE`) until `tx` ends, so a parent cannot end
/// unseen between this read and the new edges' commit: its end waits, then sees them.
pub async fn states(
    tx: &mut Tx,
    tenant_id: &str,
    ids: &[String],
) -> Result<Vec<(String, String)>, DbError> {
    let lock = match tx {
        Tx::Postgres(_) => " FOR SHARE",
        Tx::Sqlite(_) => "",
    };
    let sql = format!("SELECT id, state FROM tasks WHERE tenant_id = $1 AND id = $2{lock}");
    let mut found = Vec::with_capacity(ids.len());
    for id in ids {
        let row: Option<(String, String)> = on_tx!(tx, conn => sqlx::query_as(
            &sql)
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(conn)
            .await)?;
        found.extend(row);
    }
    Ok(found)
}

/// Every tenant's tasks, counted by state (for `GET /metrics`).
pub async fn count_by_state(db: &Db) -> Result<Vec<(String, i64)>, DbError> {
    Ok(
        crate::in_scope!(db, super::Wide::Metrics, conn => sqlx::query_as(
        "SELECT state, COUNT(*) FROM tasks GROUP BY state")
        .fetch_all(conn)
        .await)?,
    )
}

/// Tasks of `tenant_id` that are waiting (queued, scheduled, blocked or retrying).
pub async fn count_waiting(tx: &mut Tx, tenant_id: &str) -> Result<i64, DbError> {
    let row: (i64,) = on_tx!(tx, conn => sqlx::query_as(
        "SELECT COUNT(*) FROM tasks WHERE tenant_id = $1 \
         AND state IN ('queued', 'scheduled', 'blocked', 'retrying')")
        .bind(tenant_id)
        .fetch_one(conn)
        .await)?;
    Ok(row.0)
}

/// Serializes submissions of one tenant (Postgres; SQLite has one writer anyway), so a
/// cap on waiting tasks is exact across nodes.
pub async fn lock_tenant(tx: &mut Tx, tenant_id: &str) -> Result<(), DbError> {
    if let Tx::Postgres(tx) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('corral.tasks:' || $1))")
            .bind(tenant_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Wakes the workers of every node (Postgres `NOTIFY`, sent when `tx` commits).
pub async fn notify(tx: &mut Tx) -> Result<(), DbError> {
    if let Tx::Postgres(tx) = tx {
        sqlx::query("SELECT pg_notify('corral_tasks', '')")
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A task by its idempotency key.
pub async fn by_idempotency_key(
    tx: &mut Tx,
    tenant_id: &str,
    key: &str,
) -> Result<Option<TaskRow>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND idempotency_key = $2");
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, TaskRow>(&sql)
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(conn)
        .await)?)
}

/// One task of `tenant_id`.
pub async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<TaskRow, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND id = $2");
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, TaskRow>(&sql).bind(tenant_id).bind(id).fetch_one(conn).await)
        .map_err(DbError::from_fetch)
}

/// A task's attempts, first first.
pub async fn attempts(db: &Db, tenant_id: &str, id: &str) -> Result<Vec<AttemptRow>, DbError> {
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, AttemptRow>(
        "SELECT task_id, attempt, execution_id, node, started_at, finished_at, outcome \
         FROM task_attempts WHERE tenant_id = $1 AND task_id = $2 ORDER BY attempt")
        .bind(tenant_id)
        .bind(id)
        .fetch_all(conn)
        .await)?,
    )
}

/// The tasks a task depends on.
pub async fn depends_on(db: &Db, tenant_id: &str, id: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = in_scope!(db, tenant_id, conn => sqlx::query_as(
        "SELECT depends_on FROM task_dependencies WHERE tenant_id = $1 AND task_id = $2 ORDER BY depends_on")
        .bind(tenant_id)
        .bind(id)
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Filters for listing tasks. A `queued` or `scheduled` filter means what the API
/// shows: waiting and due (`queued`), or waiting for a later `run_at` (`scheduled`).
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only tasks of agents of this name.
    pub agent_name: Option<String>,
    /// Only this state.
    pub state: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Submitted at or after.
    pub since: Option<DateTime<Utc>>,
    /// Submitted before.
    pub until: Option<DateTime<Utc>>,
    /// Now, which tells `queued` from `scheduled`.
    pub now: DateTime<Utc>,
}

/// A tenant's tasks, newest first, before the cursor id.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    filter: &TaskFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<TaskRow>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE tenant_id = $1 AND id < $2 \
         AND ($3 IS NULL OR agent_name = $3) \
         AND ($4 IS NULL OR CASE \
             WHEN $4 = 'queued' THEN state IN ('queued', 'scheduled') AND run_at <= $9 \
             WHEN $4 = 'scheduled' THEN state IN ('queued', 'scheduled') AND run_at > $9 \
             ELSE state = $4 END) \
         AND ($5 IS NULL OR correlation_id = $5) AND ($6 IS NULL OR created_at >= $6) \
         AND ($7 IS NULL OR created_at < $7) ORDER BY id DESC LIMIT $8"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, TaskRow>(&sql)
        .bind(tenant_id)
        .bind(before.unwrap_or("~"))
        .bind(&filter.agent_name)
        .bind(&filter.state)
        .bind(&filter.correlation_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .bind(filter.now)
        .fetch_all(conn)
        .await)?,
    )
}

/// A claimed attempt: the task (state `running`, `attempts` already counting this one)
/// and the id its execution will have.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The task.
    pub task: TaskRow,
    /// The attempt's execution id.
    pub execution_id: String,
}

/// Claims up to `n` tasks that may start at `now` for `node`, leased until
/// `lease_until`, skipping agents that are paused; records each attempt as started.
pub async fn claim(
    db: &Db,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    n: i64,
) -> Result<Vec<Claimed>, DbError> {
    const WAITING: &str = "t.state IN ('queued', 'scheduled', 'retrying') AND t.run_at <= $3 \
        AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.id = t.agent_id AND a.status = 'paused' \
        AND a.deleted_at IS NULL)";
    let sql = match db {
        Db::Postgres(_) => format!(
            "WITH picked AS (SELECT t.id FROM tasks t WHERE {WAITING} \
             ORDER BY t.priority DESC, t.id LIMIT $4 FOR UPDATE OF t SKIP LOCKED) \
             UPDATE tasks SET state = 'running', attempts = attempts + 1, lease_owner = $1, \
             lease_expires_at = $2, updated_at = $3 FROM picked WHERE tasks.id = picked.id \
             RETURNING {}",
            COLUMNS
                .split(", ")
                .map(|c| format!("tasks.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Db::Sqlite(_) => format!(
            "UPDATE tasks SET state = 'running', attempts = attempts + 1, lease_owner = $1, \
             lease_expires_at = $2, updated_at = $3 WHERE id IN (SELECT t.id FROM tasks t \
             WHERE {WAITING} ORDER BY t.priority DESC, t.id LIMIT $4) RETURNING {COLUMNS}"
        ),
    };
    let mut tx = db.begin(super::Wide::TaskQueue).await?;
    let tasks: Vec<TaskRow> = on_tx!(&mut tx, conn => sqlx::query_as::<_, TaskRow>(&sql)
        .bind(node)
        .bind(lease_until)
        .bind(now)
        .bind(n)
        .fetch_all(conn)
        .await)?;
    let claimed: Vec<Claimed> = tasks
        .into_iter()
        .map(|task| Claimed {
            task,
            execution_id: super::new_id(),
        })
        .collect();
    if !claimed.is_empty() {
        // Every attempt row in one statement.
        let rows: Vec<String> = (0..claimed.len())
            .map(|i| {
                let b = 2 + i * 4;
                format!("($1, $2, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
            })
            .collect();
        let sql = format!(
            "INSERT INTO task_attempts (node, started_at, task_id, attempt, tenant_id, execution_id) VALUES {}",
            rows.join(", ")
        );
        on_tx!(&mut tx, conn => {
            let mut query = sqlx::query(&sql).bind(node).bind(now);
            for c in &claimed {
                query = query
                    .bind(&c.task.id)
                    .bind(c.task.attempts)
                    .bind(&c.task.tenant_id)
                    .bind(&c.execution_id);
            }
            query.execute(conn).await.map(|r| r.rows_affected())
        })?;
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Extends the leases of every attempt `node` runs. On Postgres it passes over a task
/// whose row another transaction holds (one recording its end, or cancelling it): an
/// update of many rows in no set order could otherwise wait on a transaction that
/// waits on it (a group commit ending two of them). Such a task is renewed next time
/// if it still runs, well within its lease.
pub async fn renew(db: &Db, node: &str, until: DateTime<Utc>) -> Result<u64, DbError> {
    let sql = match db {
        Db::Postgres(_) => {
            "UPDATE tasks SET lease_expires_at = $1 WHERE id IN (SELECT id FROM tasks \
             WHERE lease_owner = $2 AND state = 'running' FOR UPDATE SKIP LOCKED)"
        }
        Db::Sqlite(_) => {
            "UPDATE tasks SET lease_expires_at = $1 WHERE lease_owner = $2 AND state = 'running'"
        }
    };
    Ok(
        in_scope!(db, super::Wide::TaskQueue, conn => sqlx::query(sql)
        .bind(until)
        .bind(node)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?,
    )
}

/// The running attempts of `node` whose cancellation was asked for: (task, attempt).
pub async fn cancel_requested(db: &Db, node: &str) -> Result<Vec<(String, i32)>, DbError> {
    Ok(
        in_scope!(db, super::Wide::TaskQueue, conn => sqlx::query_as(
        "SELECT id, attempts FROM tasks WHERE lease_owner = $1 AND state = 'running' AND cancel_requested")
        .bind(node)
        .fetch_all(conn)
        .await)?,
    )
}

/// Records an attempt's end and moves its task on, fenced on (task, attempt): returns
/// whether the task was still this attempt's. Then releases or cancels its dependants.
pub async fn complete(tx: &mut Tx, c: &TaskCompletion) -> Result<bool, DbError> {
    on_tx!(tx, conn => sqlx::query(
        "UPDATE task_attempts SET outcome = $1, finished_at = $2 \
         WHERE task_id = $3 AND attempt = $4 AND outcome IS NULL")
        .bind(&c.attempt_outcome)
        .bind(c.at)
        .bind(&c.task_id)
        .bind(c.attempt as i32)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    let state = c.next.state();
    let (result, error, run_at) = match &c.next {
        Next::Succeeded { result } => (Some(result.clone()), None, None),
        Next::Retry { run_at, error } => (None, Some(Json(error.clone())), Some(*run_at)),
        Next::Failed { error } | Next::Cancelled { error } => {
            (None, Some(Json(error.clone())), None)
        }
    };
    let finished_at = state.is_final().then_some(c.at);
    // One statement, fenced on (task, attempt): a cancellation asked for while the
    // attempt ran wins over a retry (the row lock orders it against the cancel), and
    // the answer says whether any task waits on this one.
    let cancelled = Json(TaskError::new("cancelled", "the task was cancelled", false));
    let updated: Option<(String, i32)> = on_tx!(tx, conn => sqlx::query_as(
        "UPDATE tasks SET \
         state = CASE WHEN cancel_requested AND $1 = 'retrying' THEN 'cancelled' ELSE $1 END, \
         outcome = $2, result = $3, \
         error = CASE WHEN cancel_requested AND $1 = 'retrying' THEN $10 ELSE $4 END, \
         run_at = coalesce($5, run_at), lease_owner = NULL, lease_expires_at = NULL, \
         updated_at = $6, \
         finished_at = CASE WHEN cancel_requested AND $1 = 'retrying' THEN $6 ELSE $7 END \
         WHERE id = $8 AND attempts = $9 AND state = 'running' \
         RETURNING state, dependants")
        .bind(state.as_str())
        .bind(&c.attempt_outcome)
        .bind(result)
        .bind(error)
        .bind(run_at)
        .bind(c.at)
        .bind(finished_at)
        .bind(&c.task_id)
        .bind(c.attempt as i32)
        .bind(&cancelled)
        .fetch_optional(conn)
        .await)?;
    let Some((state, dependants)) = updated else {
        return Ok(false);
    };
    if dependants > 0 {
        match TaskState::parse(&state) {
            Some(TaskState::Succeeded) => release_dependants(tx, &c.task_id, c.at).await?,
            Some(why @ (TaskState::Failed | TaskState::Cancelled)) => {
                cancel_dependants(tx, &c.task_id, why, c.at).await?
            }
            _ => {}
        }
    }
    Ok(true)
}

/// A parent succeeded: its blocked dependants have one parent fewer to wait for, and
/// those with none left may start.
async fn release_dependants(tx: &mut Tx, parent: &str, now: DateTime<Utc>) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "UPDATE tasks SET deps_pending = deps_pending - 1, updated_at = $2 \
         WHERE id IN (SELECT task_id FROM task_dependencies WHERE depends_on = $1) AND state = 'blocked'")
        .bind(parent)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    on_tx!(tx, conn => sqlx::query(
        "UPDATE tasks SET state = CASE WHEN run_at > $2 THEN 'scheduled' ELSE 'queued' END \
         WHERE id IN (SELECT task_id FROM task_dependencies WHERE depends_on = $1) \
         AND state = 'blocked' AND deps_pending <= 0")
        .bind(parent)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// A parent failed or was cancelled: every task that waits on it, directly or not, is
/// cancelled with the reason.
async fn cancel_dependants(
    tx: &mut Tx,
    parent: &str,
    why: TaskState,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let error = Json(TaskError::new(
        "dependency_failed",
        format!("task {parent} it depends on was {}", why.as_str()),
        false,
    ));
    on_tx!(tx, conn => sqlx::query(
        "WITH RECURSIVE dependants(id) AS ( \
             SELECT task_id FROM task_dependencies WHERE depends_on = $1 \
             UNION SELECT d.task_id FROM task_dependencies d JOIN dependants x ON d.depends_on = x.id) \
         UPDATE tasks SET state = 'cancelled', outcome = 'dependency_failed', error = $2, \
         updated_at = $3, finished_at = $3 \
         WHERE id IN (SELECT id FROM dependants) AND state IN ('queued', 'scheduled', 'blocked', 'retrying')")
        .bind(parent)
        .bind(error)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records the end of an attempt that left no execution (a host failure, a spent
/// budget): its own transaction.
pub async fn complete_alone(db: &Db, c: &TaskCompletion) -> Result<bool, DbError> {
    let mut tx = db.begin(super::Wide::TaskQueue).await?;
    let done = complete(&mut tx, c).await?;
    tx.commit().await?;
    Ok(done)
}

/// Puts a claimed attempt back, not counted (a quota deferred it, or its agent was
/// paused): the task waits until `run_at`.
pub async fn defer(
    db: &Db,
    task_id: &str,
    attempt: i32,
    run_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let mut tx = db.begin(super::Wide::TaskQueue).await?;
    let updated = on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE tasks SET state = CASE WHEN attempts > 1 THEN 'retrying' ELSE 'queued' END, \
         attempts = attempts - 1, run_at = $1, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
         WHERE id = $3 AND attempts = $4 AND state = 'running'")
        .bind(run_at)
        .bind(now)
        .bind(task_id)
        .bind(attempt)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    if updated == 1 {
        on_tx!(&mut tx, conn => sqlx::query(
            "DELETE FROM task_attempts WHERE task_id = $1 AND attempt = $2")
            .bind(task_id)
            .bind(attempt)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
    }
    tx.commit().await?;
    Ok(updated == 1)
}

/// Takes over the attempts whose node let its lease lapse (it died, or `node` is
/// handing them back at shutdown): each is recorded `node_lost`, and its task retried
/// (a lost node is always worth a retry) or failed when it has no attempts left.
/// Returns how many were taken over.
pub async fn take_over_lapsed(
    db: &Db,
    now: DateTime<Utc>,
    only_node: Option<&str>,
) -> Result<usize, DbError> {
    let lapsed: Vec<(String, i32, i32, Json<Backoff>)> = in_scope!(db, super::Wide::TaskQueue, conn => sqlx::query_as(
        "SELECT id, attempts, max_attempts, backoff FROM tasks WHERE state = 'running' \
         AND (lease_expires_at < $1 OR lease_owner = $2)")
        .bind(now)
        .bind(only_node)
        .fetch_all(conn)
        .await)?;
    let mut taken = 0;
    for (id, attempt, max_attempts, Json(backoff)) in lapsed {
        let error = TaskError::new(
            "node_lost",
            "the node running this attempt stopped before it ended",
            true,
        );
        let next = if attempt >= max_attempts {
            Next::Failed { error }
        } else {
            let delay = backoff.delay(attempt as u32);
            Next::Retry {
                run_at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                error,
            }
        };
        let completion = TaskCompletion {
            task_id: id,
            attempt: attempt as u32,
            attempt_outcome: "node_lost".into(),
            next,
            at: now,
            // Moved on by the advancers' sweep.
            workflow_id: None,
        };
        if complete_alone(db, &completion).await? {
            taken += 1;
        }
    }
    Ok(taken)
}

/// What cancelling found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting: it is cancelled now (and so are its dependants).
    Now,
    /// It is running: its node will stop it.
    Requested,
    /// It had already ended.
    AlreadyFinal,
}

/// Cancels a task of `tenant_id`: at once if it waits, by request if it runs. (A
/// task that moved from running to waiting between the two tries is tried again.)
pub async fn cancel(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Cancelled, DbError> {
    for _ in 0..3 {
        match cancel_once(tx, tenant_id, id, now).await? {
            Some(cancelled) => return Ok(cancelled),
            None => continue,
        }
    }
    Ok(Cancelled::AlreadyFinal)
}

async fn cancel_once(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<Cancelled>, DbError> {
    let error = Json(TaskError::new("cancelled", "the task was cancelled", false));
    let waiting = on_tx!(tx, conn => sqlx::query(
        "UPDATE tasks SET state = 'cancelled', outcome = 'cancelled', error = $1, updated_at = $2, \
         finished_at = $2 WHERE tenant_id = $3 AND id = $4 \
         AND state IN ('queued', 'scheduled', 'blocked', 'retrying')")
        .bind(&error)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    if waiting == 1 {
        cancel_dependants(tx, id, TaskState::Cancelled, now).await?;
        return Ok(Some(Cancelled::Now));
    }
    let running = on_tx!(tx, conn => sqlx::query(
        "UPDATE tasks SET cancel_requested = TRUE, updated_at = $1 \
         WHERE tenant_id = $2 AND id = $3 AND state = 'running'")
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    if running == 1 {
        return Ok(Some(Cancelled::Requested));
    }
    let state: Option<(String,)> = on_tx!(tx, conn => sqlx::query_as(
        "SELECT state FROM tasks WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(conn)
        .await)?;
    match state {
        Some((state,)) if TaskState::parse(&state).is_some_and(TaskState::is_final) => {
            Ok(Some(Cancelled::AlreadyFinal))
        }
        Some(_) => Ok(None),
        None => Err(DbError::NotFound),
    }
}
