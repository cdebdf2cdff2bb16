//! Workflows, their steps and stored definitions (see [`crate::workflows`]).
//!
//! A workflow's row is locked (`FOR UPDATE` on Postgres; SQLite's one writer does the
//! same) by every transaction that moves it on, so two nodes advancing one workflow
//! take turns and the second finds nothing left to do. A step's task is linked once
//! (`workflow_steps.task_id` is unique) in the transaction that enqueues it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use sqlx::types::Json;

use super::tasks::{self, TaskRow};
use super::{Db, DbError, SqliteScript, Tx};
use crate::tasks::TaskError;
use crate::workflows::WorkflowSpec;
use crate::{in_scope, on_tx};

/// One workflow as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WorkflowRow {
    /// Its id (UUIDv7).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The stored definition it runs, if it was started by name.
    pub definition_name: Option<String>,
    /// That definition's version.
    pub definition_version: Option<i32>,
    /// The steps it runs (read straight into the spec: never changed once stored).
    pub definition: Json<Arc<WorkflowSpec>>,
    /// Its input, as JSON text.
    pub input: String,
    /// Its [`crate::workflows::WorkflowState`], by name.
    pub state: String,
    /// Its output (JSON text), once it succeeded.
    pub output: Option<String>,
    /// Why it failed or was cancelled.
    pub error: Option<Json<TaskError>>,
    /// A caller asked to cancel it.
    pub cancel_requested: bool,
    /// The submitter's correlation id (its steps' tasks carry it, or the workflow's id).
    pub correlation_id: Option<String>,
    /// The submission's idempotency key.
    pub idempotency_key: Option<String>,
    /// The submission's hash, to tell a retry from a reuse of the key.
    pub request_hash: Option<String>,
    /// The API key that submitted it (its steps run as that key).
    pub actor_key_id: Option<String>,
    /// The schedule that started it, if one did.
    pub schedule_id: Option<String>,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// Its state (or cancellation request) last changed.
    pub updated_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What moving a workflow on may change (the rest is fixed when it is submitted).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    state: String,
    output: Option<String>,
    error: Option<Json<TaskError>>,
    cancel_requested: bool,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl WorkflowRow {
    /// Its [`Progress`], to tell whether an advance changed it without copying its
    /// definition and input.
    pub fn progress(&self) -> Progress {
        Progress {
            state: self.state.clone(),
            output: self.output.clone(),
            error: self.error.clone(),
            cancel_requested: self.cancel_requested,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        }
    }
}

const COLUMNS: &str = "id, tenant_id, definition_name, definition_version, definition, input, state, \
    output, error, cancel_requested, correlation_id, idempotency_key, request_hash, \
    actor_key_id, schedule_id, created_at, updated_at, finished_at";

/// A step's columns, with its task's and its compensation's task's states (from
/// [`STEP_TASKS`]); its task's result and error only while the step runs (after, they
/// are the step's own).
const STEP_COLUMNS: &str = "s.workflow_id, s.name, s.position, s.state, s.task_id, s.output, \
    s.error, s.completed_seq, s.compensation_state, s.compensation_task_id, s.started_at, \
    s.finished_at, t.state AS task_state, \
    CASE WHEN s.state = 'running' THEN t.result END AS task_result, \
    CASE WHEN s.state = 'running' THEN t.error END AS task_error, \
    c.state AS compensation_task_state, c.error AS compensation_task_error";

/// Joins a step (`s`) to its task (`t`) and its compensation's task (`c`).
const STEP_TASKS: &str = "LEFT JOIN tasks t ON t.id = s.task_id \
    LEFT JOIN tasks c ON c.id = s.compensation_task_id";

/// One step as stored, with the states of its task and its compensation's task.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StepRow {
    /// The workflow.
    pub workflow_id: String,
    /// The step's name.
    pub name: String,
    /// Its place in the definition.
    pub position: i32,
    /// Its [`crate::workflows::StepState`], by name.
    pub state: String,
    /// Its task, once enqueued.
    pub task_id: Option<String>,
    /// Its output (JSON text), once it succeeded.
    pub output: Option<String>,
    /// Why it failed, was skipped or cancelled.
    pub error: Option<Json<TaskError>>,
    /// Its place among the steps that succeeded (1 first).
    pub completed_seq: Option<i32>,
    /// Its compensation's state: `pending`, `running`, `succeeded`, `failed`.
    pub compensation_state: Option<String>,
    /// Its compensation's task, once enqueued.
    pub compensation_task_id: Option<String>,
    /// When its task was enqueued.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its task's state.
    pub task_state: Option<String>,
    /// Its task's result.
    pub task_result: Option<String>,
    /// Its task's error.
    pub task_error: Option<Json<TaskError>>,
    /// Its compensation task's state.
    pub compensation_task_state: Option<String>,
    /// Its compensation task's error.
    pub compensation_task_error: Option<Json<TaskError>>,
}

impl StepRow {
    /// A step as it is stored before anything ran.
    pub fn pending(workflow_id: &str, name: &str, position: i32) -> StepRow {
        StepRow {
            workflow_id: workflow_id.to_string(),
            name: name.to_string(),
            position,
            state: "pending".into(),
            task_id: None,
            output: None,
            error: None,
            completed_seq: None,
            compensation_state: None,
            compensation_task_id: None,
            started_at: None,
            finished_at: None,
            task_state: None,
            task_result: None,
            task_error: None,
            compensation_task_state: None,
            compensation_task_error: None,
        }
    }
}

/// Inserts a workflow and one pending row per step; returns those rows.
pub async fn insert(
    tx: &mut Tx,
    w: &WorkflowRow,
    steps: &[String],
) -> Result<Vec<StepRow>, DbError> {
    let sql = format!(
        "INSERT INTO workflows ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
         $12, $13, $14, $15, $16, $17, $18)"
    );
    on_tx!(tx, conn => sqlx::query(&sql)
        .bind(&w.id)
        .bind(&w.tenant_id)
        .bind(&w.definition_name)
        .bind(w.definition_version)
        .bind(&w.definition)
        .bind(&w.input)
        .bind(&w.state)
        .bind(&w.output)
        .bind(&w.error)
        .bind(w.cancel_requested)
        .bind(&w.correlation_id)
        .bind(&w.idempotency_key)
        .bind(&w.request_hash)
        .bind(&w.actor_key_id)
        .bind(&w.schedule_id)
        .bind(w.created_at)
        .bind(w.updated_at)
        .bind(w.finished_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    // Every step in one statement; they start pending.
    let rows: Vec<String> = (0..steps.len())
        .map(|i| format!("($1, ${}, $2, ${}, 'pending')", 3 + 2 * i, 4 + 2 * i))
        .collect();
    let sql = format!(
        "INSERT INTO workflow_steps (workflow_id, name, tenant_id, position, state) VALUES {}",
        rows.join(", ")
    );
    on_tx!(tx, conn => {
        let mut query = sqlx::query(&sql).bind(&w.id).bind(&w.tenant_id);
        for (position, name) in steps.iter().enumerate() {
            query = query.bind(name).bind(position as i32);
        }
        query.execute(conn).await.map(|r| r.rows_affected())
    })?;
    Ok(steps
        .iter()
        .enumerate()
        .map(|(position, name)| StepRow::pending(&w.id, name, position as i32))
        .collect())
}

/// A workflow of `tenant_id`, locked until `tx` ends (Postgres; SQLite's write
/// transaction holds the only write lock already).
pub async fn lock(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<WorkflowRow, DbError> {
    let lock = match tx {
        Tx::Postgres(_) => " FOR UPDATE",
        Tx::Sqlite(_) => "",
    };
    let sql = format!("SELECT {COLUMNS} FROM workflows WHERE tenant_id = $1 AND id = $2{lock}");
    on_tx!(tx, conn => sqlx::query_as::<_, WorkflowRow>(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The workflows `ids` (sorted, without repeats), across tenants, locked until `tx`
/// ends in that order (Postgres; SQLite's write transaction holds the only write lock
/// already). Missing ones are left out. One ordered statement: two transactions that
/// lock several workflows each cannot wait on each other.
pub async fn lock_all(tx: &mut Tx, ids: &[String]) -> Result<Vec<WorkflowRow>, DbError> {
    match tx {
        // One workflow (the usual batch) by `= $1`: Postgres plans a statement with an
        // array parameter afresh on every execution, which costs more than the lock.
        Tx::Postgres(tx) if ids.len() > 1 => {
            let sql = format!(
                "SELECT {COLUMNS} FROM workflows WHERE id = ANY($1) ORDER BY id FOR UPDATE"
            );
            Ok(sqlx::query_as::<_, WorkflowRow>(&sql)
                .bind(ids)
                .fetch_all(&mut **tx)
                .await?)
        }
        // SQLite's write transaction holds the only write lock already: a plain read.
        Tx::Sqlite(tx) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM workflows WHERE id IN ({}) ORDER BY id",
                placeholders(ids.len())
            );
            let mut query = sqlx::query_as::<_, WorkflowRow>(&sql);
            for id in ids {
                query = query.bind(id);
            }
            Ok(query.fetch_all(&mut **tx).await?)
        }
        Tx::Postgres(tx) => {
            let sql = format!("SELECT {COLUMNS} FROM workflows WHERE id = $1 FOR UPDATE");
            let row = match ids.first() {
                Some(id) => {
                    sqlx::query_as::<_, WorkflowRow>(&sql)
                        .bind(id)
                        .fetch_optional(&mut **tx)
                        .await?
                }
                None => None,
            };
            Ok(row.into_iter().collect())
        }
    }
}

/// A workflow by its idempotency key.
pub async fn by_idempotency_key(
    tx: &mut Tx,
    tenant_id: &str,
    key: &str,
) -> Result<Option<WorkflowRow>, DbError> {
    let sql =
        format!("SELECT {COLUMNS} FROM workflows WHERE tenant_id = $1 AND idempotency_key = $2");
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, WorkflowRow>(&sql)
        .bind(tenant_id)
        .bind(key)
        .fetch_optional(conn)
        .await)?)
}

/// A workflow's steps in definition order, with their tasks' states.
pub async fn steps(tx: &mut Tx, id: &str) -> Result<Vec<StepRow>, DbError> {
    let sql = format!(
        "SELECT {STEP_COLUMNS} FROM workflow_steps s {STEP_TASKS} \
         WHERE s.workflow_id = $1 ORDER BY s.position"
    );
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, StepRow>(&sql)
        .bind(id)
        .fetch_all(conn)
        .await)?)
}

/// The steps of every workflow in `ids`, by workflow: one statement on Postgres.
pub async fn steps_of_all(
    tx: &mut Tx,
    ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<StepRow>>, DbError> {
    let mut by_workflow: std::collections::HashMap<String, Vec<StepRow>> =
        std::collections::HashMap::new();
    let rows: Vec<StepRow> = match tx {
        // As in `lock_all`: one workflow by `= $1`, planned once.
        Tx::Postgres(tx) if ids.len() > 1 => {
            let sql = format!(
                "SELECT {STEP_COLUMNS} FROM workflow_steps s {STEP_TASKS} \
                 WHERE s.workflow_id = ANY($1) ORDER BY s.workflow_id, s.position"
            );
            sqlx::query_as::<_, StepRow>(&sql)
                .bind(ids)
                .fetch_all(&mut **tx)
                .await?
        }
        Tx::Sqlite(tx) if ids.len() > 1 => {
            let sql = format!(
                "SELECT {STEP_COLUMNS} FROM workflow_steps s {STEP_TASKS} \
                 WHERE s.workflow_id IN ({}) ORDER BY s.workflow_id, s.position",
                placeholders(ids.len())
            );
            let mut query = sqlx::query_as::<_, StepRow>(&sql);
            for id in ids {
                query = query.bind(id);
            }
            query.fetch_all(&mut **tx).await?
        }
        tx => match ids.first() {
            Some(id) => steps(tx, id).await?,
            None => Vec::new(),
        },
    };
    for row in rows {
        by_workflow
            .entry(row.workflow_id.clone())
            .or_default()
            .push(row);
    }
    Ok(by_workflow)
}

/// The workflows `rows` with their steps (read in one statement).
pub async fn steps_for(
    tx: &mut Tx,
    rows: Vec<WorkflowRow>,
) -> Result<Vec<(WorkflowRow, Vec<StepRow>)>, DbError> {
    let ids: Vec<String> = rows.iter().map(|w| w.id.clone()).collect();
    let mut steps = steps_of_all(tx, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|w| {
            let of = steps.remove(&w.id).unwrap_or_default();
            (w, of)
        })
        .collect())
}

/// The workflows `ids` (sorted, without repeats), across tenants, with their steps, in
/// one statement: for an SQLite write transaction, which holds the file's only write
/// lock, so nothing needs locking first. Missing ones are left out.
pub async fn with_steps(
    tx: &mut Tx,
    ids: &[String],
) -> Result<Vec<(WorkflowRow, Vec<StepRow>)>, DbError> {
    use sqlx::Row;
    static SQL_START: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let workflow: Vec<String> = COLUMNS
            .split(", ")
            .map(|c| format!("w.{c} AS w_{c}"))
            .collect();
        // The workflow's columns come with its first step only (its definition is
        // the widest value read).
        format!(
            "SELECT {STEP_COLUMNS}, {} FROM workflow_steps s \
             LEFT JOIN workflows w ON w.id = s.workflow_id AND s.position = 0 {STEP_TASKS}",
            workflow.join(", ")
        )
    });
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{} WHERE s.workflow_id IN ({}) ORDER BY s.workflow_id, s.position",
        *SQL_START,
        placeholders(ids.len())
    );
    let mut out: Vec<(WorkflowRow, Vec<StepRow>)> = Vec::with_capacity(ids.len());
    on_tx!(tx, conn => {
        let mut query = sqlx::query(&sql);
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(conn).await?;
        for row in &rows {
            let step = StepRow::from_row(row)?;
            match out.last_mut() {
                Some((w, steps)) if w.id == step.workflow_id => steps.push(step),
                // A workflow's steps come in order, the first with its workflow.
                _ if step.position != 0 => {
                    return Err(DbError::Internal(sqlx::Error::Protocol(format!(
                        "workflow {:?}: its steps were read without its first",
                        step.workflow_id
                    ))));
                }
                _ => {
                    let workflow = WorkflowRow {
                        id: row.try_get("w_id")?,
                        tenant_id: row.try_get("w_tenant_id")?,
                        definition_name: row.try_get("w_definition_name")?,
                        definition_version: row.try_get("w_definition_version")?,
                        definition: row.try_get("w_definition")?,
                        input: row.try_get("w_input")?,
                        state: row.try_get("w_state")?,
                        output: row.try_get("w_output")?,
                        error: row.try_get("w_error")?,
                        cancel_requested: row.try_get("w_cancel_requested")?,
                        correlation_id: row.try_get("w_correlation_id")?,
                        idempotency_key: row.try_get("w_idempotency_key")?,
                        request_hash: row.try_get("w_request_hash")?,
                        actor_key_id: row.try_get("w_actor_key_id")?,
                        schedule_id: row.try_get("w_schedule_id")?,
                        created_at: row.try_get("w_created_at")?,
                        updated_at: row.try_get("w_updated_at")?,
                        finished_at: row.try_get("w_finished_at")?,
                    };
                    out.push((workflow, vec![step]));
                }
            }
        }
        Ok::<_, sqlx::Error>(())
    })?;
    Ok(out)
}

/// Binds what moving a workflow on may change, then its id.
macro_rules! bind_progress {
    ($query:expr, $w:expr) => {
        $query
            .bind(&$w.state)
            .bind(&$w.output)
            .bind(&$w.error)
            .bind($w.cancel_requested)
            .bind($w.updated_at)
            .bind($w.finished_at)
            .bind(&$w.id)
    };
}

/// Binds what moving a workflow on may change in a step, then its key.
macro_rules! bind_step {
    ($query:expr, $s:expr) => {
        $query
            .bind(&$s.state)
            .bind(&$s.task_id)
            .bind(&$s.output)
            .bind(&$s.error)
            .bind($s.completed_seq)
            .bind(&$s.compensation_state)
            .bind(&$s.compensation_task_id)
            .bind($s.started_at)
            .bind($s.finished_at)
            .bind(&$s.workflow_id)
            .bind(&$s.name)
    };
}

/// Writes a workflow's state, output, error and counters.
pub async fn update(tx: &mut Tx, w: &WorkflowRow) -> Result<(), DbError> {
    on_tx!(tx, conn => bind_progress!(sqlx::query(
        "UPDATE workflows SET state = $1, output = $2, error = $3, cancel_requested = $4, \
         updated_at = $5, finished_at = $6 WHERE id = $7"), w)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Writes what advances decided: the tasks they enqueued (first, as steps name them),
/// then the workflows and steps that changed. On SQLite it is one round trip to the
/// connection's thread, a statement for each kind of row (see
/// [`SqliteScript::padded_values`]); on Postgres, a statement a task and a workflow,
/// and one for the steps.
pub async fn write_advances(
    tx: &mut Tx,
    tasks: &[TaskRow],
    workflows: &[WorkflowRow],
    steps: &[StepRow],
) -> Result<(), DbError> {
    match tx {
        Tx::Sqlite(conn) => {
            let script = tasks::push_insert(SqliteScript::default(), tasks);
            let script = push_update_workflows(script, workflows);
            let script = push_update_steps(script, steps);
            script.run(conn).await
        }
        Tx::Postgres(_) => {
            tasks::insert_all(tx, tasks).await?;
            for workflow in workflows {
                update(tx, workflow).await?;
            }
            update_steps(tx, steps).await
        }
    }
}

/// Most rows in one padded statement.
const MAX_ROWS: usize = 256;

/// The `UPDATE workflows` of [`update`] for several rows, in `script` (SQLite).
fn push_update_workflows<'q>(
    mut script: SqliteScript<'q>,
    workflows: &'q [WorkflowRow],
) -> SqliteScript<'q> {
    for chunk in workflows.chunks(MAX_ROWS) {
        script.push(&format!(
            "UPDATE workflows SET state = v.column1, output = v.column2, error = v.column3, \
             cancel_requested = v.column4, updated_at = v.column5, finished_at = v.column6 \
             FROM (VALUES {}) AS v WHERE workflows.id = v.column7",
            SqliteScript::padded_values(chunk.len(), 7)
        ));
        for w in chunk {
            script = bind_progress!(script, w);
        }
        script = script.bind_padding(chunk.len(), 7);
    }
    script
}

/// The statement that writes steps' states, tasks and outputs from `VALUES` rows.
fn update_steps_sql(values: &str) -> String {
    format!(
        "UPDATE workflow_steps SET state = v.column1, task_id = v.column2, output = v.column3, \
         error = v.column4, completed_seq = v.column5, compensation_state = v.column6, \
         compensation_task_id = v.column7, started_at = v.column8, finished_at = v.column9 \
         FROM (VALUES {values}) AS v \
         WHERE workflow_steps.workflow_id = v.column10 AND workflow_steps.name = v.column11"
    )
}

/// [`update_steps`] in `script` (SQLite).
fn push_update_steps<'q>(mut script: SqliteScript<'q>, steps: &'q [StepRow]) -> SqliteScript<'q> {
    for chunk in steps.chunks(MAX_ROWS) {
        script.push(&update_steps_sql(&SqliteScript::padded_values(
            chunk.len(),
            11,
        )));
        for s in chunk {
            script = bind_step!(script, s);
        }
        script = script.bind_padding(chunk.len(), 11);
    }
    script
}

/// Writes steps' states, tasks and outputs: one `UPDATE … FROM (VALUES …)` per chunk
/// of rows (power-of-two chunks on Postgres, so only a few statement shapes are
/// prepared; padded on SQLite, see [`SqliteScript::padded_values`]).
pub async fn update_steps(tx: &mut Tx, steps: &[StepRow]) -> Result<(), DbError> {
    // Postgres needs the types of a VALUES list's parameters.
    const CAST: [&str; 11] = [
        "::text",
        "::text",
        "::text",
        "::jsonb",
        "::integer",
        "::text",
        "::text",
        "::timestamptz",
        "::timestamptz",
        "::text",
        "::text",
    ];
    let conn = match tx {
        Tx::Sqlite(conn) => {
            return push_update_steps(SqliteScript::default(), steps)
                .run(conn)
                .await;
        }
        Tx::Postgres(conn) => conn,
    };
    let mut rest = steps;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(super::chunk_size(rest.len(), MAX_ROWS));
        rest = tail;
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let values: Vec<String> = CAST
                    .iter()
                    .enumerate()
                    .map(|(c, cast)| format!("${}{cast}", i * CAST.len() + c + 1))
                    .collect();
                format!("({})", values.join(", "))
            })
            .collect();
        let sql = update_steps_sql(&rows.join(", "));
        let mut query = sqlx::query(&sql);
        for s in chunk {
            query = bind_step!(query, s);
        }
        query.execute(&mut **conn).await?;
    }
    Ok(())
}

/// One workflow of `tenant_id`.
pub async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<WorkflowRow, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM workflows WHERE tenant_id = $1 AND id = $2");
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, WorkflowRow>(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}

/// Filters for listing workflows.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Only this state.
    pub state: Option<String>,
    /// Only runs of this stored definition.
    pub definition: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only runs started by this schedule.
    pub schedule_id: Option<String>,
    /// Submitted at or after.
    pub since: Option<DateTime<Utc>>,
    /// Submitted before.
    pub until: Option<DateTime<Utc>>,
}

/// A tenant's workflows, newest first, before the cursor id.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    filter: &WorkflowFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<WorkflowRow>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workflows WHERE tenant_id = $1 AND id < $2 \
         AND ($3 IS NULL OR state = $3) AND ($4 IS NULL OR definition_name = $4) \
         AND ($5 IS NULL OR correlation_id = $5) AND ($6 IS NULL OR schedule_id = $6) \
         AND ($7 IS NULL OR created_at >= $7) AND ($8 IS NULL OR created_at < $8) \
         ORDER BY id DESC LIMIT $9"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, WorkflowRow>(&sql)
        .bind(tenant_id)
        .bind(before.unwrap_or("~"))
        .bind(&filter.state)
        .bind(&filter.definition)
        .bind(&filter.correlation_id)
        .bind(&filter.schedule_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// Workflows (with their tenants) that have a step or compensation whose task has
/// ended but is not recorded yet: what the advancers move on, across tenants.
pub async fn needing_advance(db: &Db, limit: i64) -> Result<Vec<(String, String)>, DbError> {
    Ok(
        in_scope!(db, super::Wide::Orchestration, conn => sqlx::query_as(
        "SELECT workflow_id, tenant_id FROM ( \
           SELECT s.workflow_id, s.tenant_id FROM workflow_steps s JOIN tasks t ON t.id = s.task_id \
           WHERE s.state = 'running' AND t.state IN ('succeeded', 'failed', 'cancelled') \
           UNION \
           SELECT s.workflow_id, s.tenant_id FROM workflow_steps s \
           JOIN tasks t ON t.id = s.compensation_task_id \
           WHERE s.compensation_state = 'running' AND t.state IN ('succeeded', 'failed', 'cancelled') \
         ) ended LIMIT $1")
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// What a workflow's executions used and cost, all attempts of all its steps and
/// compensations together.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct Usage {
    /// Executions recorded.
    pub executions: i64,
    /// Their cost, in picodollars.
    pub cost_picodollars: i64,
    /// Fuel burned.
    pub fuel: i64,
    /// Wall time, in microseconds.
    pub wall_time_us: i64,
    /// The highest peak memory of any of them.
    pub peak_memory_bytes: i64,
    /// Model input tokens.
    pub input_tokens: i64,
    /// Model output tokens.
    pub output_tokens: i64,
}

/// What a workflow's executions used and cost.
pub async fn usage(db: &Db, tenant_id: &str, id: &str) -> Result<Usage, DbError> {
    Ok(in_scope!(db, tenant_id, conn => sqlx::query_as::<_, Usage>(
        "WITH step_tasks AS ( \
           SELECT task_id AS id FROM workflow_steps WHERE workflow_id = $2 AND task_id IS NOT NULL \
           UNION SELECT compensation_task_id FROM workflow_steps \
           WHERE workflow_id = $2 AND compensation_task_id IS NOT NULL), \
         runs AS (SELECT id, cost_picodollars, fuel, wall_time_us, peak_memory_bytes FROM executions \
           WHERE tenant_id = $1 AND task_id IN (SELECT id FROM step_tasks)) \
         SELECT (SELECT COUNT(*) FROM runs) AS executions, \
           CAST(COALESCE((SELECT SUM(cost_picodollars) FROM runs), 0) AS BIGINT) AS cost_picodollars, \
           CAST(COALESCE((SELECT SUM(fuel) FROM runs), 0) AS BIGINT) AS fuel, \
           CAST(COALESCE((SELECT SUM(wall_time_us) FROM runs), 0) AS BIGINT) AS wall_time_us, \
           CAST(COALESCE((SELECT MAX(peak_memory_bytes) FROM runs), 0) AS BIGINT) AS peak_memory_bytes, \
           CAST(COALESCE((SELECT SUM(input_tokens) FROM llm_calls \
             WHERE execution_id IN (SELECT id FROM runs)), 0) AS BIGINT) AS input_tokens, \
           CAST(COALESCE((SELECT SUM(output_tokens) FROM llm_calls \
             WHERE execution_id IN (SELECT id FROM runs)), 0) AS BIGINT) AS output_tokens")
        .bind(tenant_id)
        .bind(id)
        .fetch_one(conn)
        .await)?)
}

/// One stored version of a workflow definition.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DefinitionRow {
    /// Its name.
    pub name: String,
    /// Its version (1 for the first).
    pub version: i32,
    /// The definition (a [`crate::workflows::WorkflowSpec`]).
    pub definition: Json<Value>,
    /// Stored.
    pub created_at: DateTime<Utc>,
}

/// Stores the next version of the definition `name`; returns it.
pub async fn put_definition(
    tx: &mut Tx,
    tenant_id: &str,
    name: &str,
    definition: &Value,
    actor_key_id: Option<&str>,
    now: DateTime<Utc>,
) -> Result<DefinitionRow, DbError> {
    let (latest,): (Option<i32>,) = on_tx!(tx, conn => sqlx::query_as(
        "SELECT MAX(version) FROM workflow_definitions WHERE tenant_id = $1 AND name = $2")
        .bind(tenant_id)
        .bind(name)
        .fetch_one(conn)
        .await)?;
    let row = DefinitionRow {
        name: name.into(),
        version: latest.unwrap_or(0) + 1,
        definition: Json(definition.clone()),
        created_at: now,
    };
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO workflow_definitions (tenant_id, name, version, definition, actor_key_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(tenant_id)
        .bind(&row.name)
        .bind(row.version)
        .bind(&row.definition)
        .bind(actor_key_id)
        .bind(row.created_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))
    .map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            DbError::Conflict("workflow definition version")
        }
        e => DbError::Internal(e),
    })?;
    Ok(row)
}

/// A stored definition: `version`, or the latest.
pub async fn definition(
    tx: &mut Tx,
    tenant_id: &str,
    name: &str,
    version: Option<i32>,
) -> Result<DefinitionRow, DbError> {
    on_tx!(tx, conn => sqlx::query_as::<_, DefinitionRow>(
        "SELECT name, version, definition, created_at FROM workflow_definitions \
         WHERE tenant_id = $1 AND name = $2 AND ($3 IS NULL OR version = $3) \
         ORDER BY version DESC LIMIT 1")
        .bind(tenant_id)
        .bind(name)
        .bind(version)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}

/// The latest version of each of a tenant's definitions, by name.
pub async fn definitions(db: &Db, tenant_id: &str) -> Result<Vec<DefinitionRow>, DbError> {
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, DefinitionRow>(
        "SELECT d.name, d.version, d.definition, d.created_at FROM workflow_definitions d \
         WHERE d.tenant_id = $1 AND d.version = (SELECT MAX(version) FROM workflow_definitions x \
           WHERE x.tenant_id = d.tenant_id AND x.name = d.name) ORDER BY d.name")
        .bind(tenant_id)
        .fetch_all(conn)
        .await)?,
    )
}
