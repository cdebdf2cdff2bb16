//! Execution records: one row per invocation, written by the group-commit
//! [`writer`](super::writer) and read back with filters and cursors.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use super::{Db, DbError, Tx};
use crate::in_scope;
use crate::runtime::LogEntry;

/// The stored record of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ExecutionRecord {
    /// The execution id (also given to the guest).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The agent.
    pub agent_id: String,
    /// The agent's name at the time.
    pub agent_name: String,
    /// The version that ran.
    pub version_id: String,
    /// Its semver.
    pub version: String,
    /// The action.
    pub action: String,
    /// The outcome, e.g. `succeeded`.
    pub outcome: String,
    /// The error code, for outcomes other than `succeeded`.
    pub error_code: Option<String>,
    /// The error message.
    pub error_message: Option<String>,
    /// Input size.
    pub input_bytes: i64,
    /// The first bytes of the input.
    pub input_excerpt: String,
    /// Output size (also when it was too large to keep).
    pub output_bytes: i64,
    /// The first bytes of the output.
    pub output_excerpt: Option<String>,
    /// Fuel consumed.
    pub fuel: i64,
    /// Peak linear memory.
    pub peak_memory_bytes: i64,
    /// Wall time in microseconds.
    pub wall_time_us: i64,
    /// Bytes of logs captured.
    pub log_bytes: i64,
    /// The captured logs (bounded by the log limit).
    pub logs: Json<Vec<LogEntry>>,
    /// When the request arrived.
    pub queued_at: DateTime<Utc>,
    /// When the guest started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Cost in picodollars (10⁻¹² USD).
    pub cost_picodollars: i64,
    /// The caller's correlation id.
    pub correlation_id: Option<String>,
    /// The API key that invoked it.
    pub actor_key_id: Option<String>,
    /// The request's idempotency key.
    pub idempotency_key: Option<String>,
    /// The execution that called this one, if another agent did.
    pub parent_execution_id: Option<String>,
    /// The execution at the root of this one's call tree (itself for a root).
    pub root_execution_id: Option<String>,
    /// How deep in the call tree: 0 for a root.
    pub call_depth: i32,
    /// The W3C trace it ran in (32 hex digits): the request's `traceparent`'s, its
    /// caller's, or a new one.
    pub trace_id: Option<String>,
    /// Its own span in that trace (16 hex digits).
    pub span_id: Option<String>,
    /// The span it was asked from: the `traceparent` it was invoked with, the calling
    /// execution's span, or the span its task was submitted from.
    pub parent_span_id: Option<String>,
    /// What the capabilities used (`http`, `kv`, `config`, `agents`) and refused
    /// (`denials`).
    pub capabilities: Json<serde_json::Value>,
    /// How many characters the database could not hold (NUL) were replaced by U+FFFD
    /// in this record's text (see [`text`](super::text)).
    pub replaced_characters: i64,
    /// Whether the full record could not be stored and only its outcome, usage and
    /// cost were kept (logs, excerpts, error message and capability details dropped).
    pub record_degraded: bool,
    /// The task this execution is an attempt of.
    pub task_id: Option<String>,
    /// Which attempt (1 for the first).
    pub attempt: Option<i32>,
    /// The whole output (JSON text), when it succeeded.
    pub output: Option<String>,
    /// The whole input, when the agent's policy opts in (`record_input`).
    pub input: Option<String>,
    /// The model calls it made (stored in `llm_calls`, not in this row).
    #[sqlx(skip)]
    #[serde(skip)]
    pub llm_calls: Vec<crate::runtime::capabilities::llm::LlmCall>,
    /// Their tokens, input and output, charged to the token budgets (kept when the
    /// record is degraded, like the cost).
    #[sqlx(skip)]
    #[serde(skip)]
    pub llm_tokens: i64,
}

impl ExecutionRecord {
    /// Replaces what the database cannot hold in the guest's text (logs, excerpts,
    /// error, capability details), counting it in `replaced_characters`.
    pub fn make_storable(&mut self) {
        use super::text::{replace_nul, replace_nul_json, replace_nul_opt};
        let mut replaced = replace_nul_opt(&mut self.error_code)
            + replace_nul_opt(&mut self.error_message)
            + replace_nul(&mut self.input_excerpt)
            + replace_nul_opt(&mut self.output_excerpt)
            + replace_nul_opt(&mut self.output)
            + replace_nul_opt(&mut self.input)
            + replace_nul_opt(&mut self.correlation_id)
            + replace_nul(&mut self.action)
            + replace_nul_json(&mut self.capabilities.0);
        for entry in &mut self.logs.0 {
            replaced += replace_nul(&mut entry.message);
        }
        for call in &mut self.llm_calls {
            replaced += replace_nul(&mut call.provider_model)
                + replace_nul(&mut call.finish_reason)
                + replace_nul_opt(&mut call.request_id)
                + replace_nul_opt(&mut call.error)
                + replace_nul_opt(&mut call.prompt)
                + replace_nul_opt(&mut call.answer);
        }
        self.replaced_characters += replaced as i64;
    }

    /// Drops everything but the outcome, usage and cost: what is kept when the full
    /// record could not be written, so a run that happened is never unrecorded.
    pub fn degrade(&mut self) {
        self.logs = Json(Vec::new());
        self.input_excerpt = String::new();
        self.output_excerpt = None;
        self.output = None;
        self.input = None;
        self.error_message = self
            .error_code
            .as_ref()
            .map(|_| "(the full record could not be stored)".to_string());
        self.capabilities = Json(serde_json::json!({}));
        // Their cost stays in the execution's.
        self.llm_calls = Vec::new();
        self.record_degraded = true;
    }
}

const COLUMNS: &str = "id, tenant_id, agent_id, agent_name, version_id, version, action, outcome, error_code, error_message, \
    input_bytes, input_excerpt, output_bytes, output_excerpt, fuel, peak_memory_bytes, wall_time_us, log_bytes, logs, \
    queued_at, started_at, finished_at, cost_picodollars, correlation_id, actor_key_id, idempotency_key, \
    parent_execution_id, root_execution_id, call_depth, capabilities, replaced_characters, record_degraded, task_id, attempt, output, input, \
    trace_id, span_id, parent_span_id";

const COLUMN_COUNT: usize = 39;

/// Inserts records (called by the group-commit writer).
///
/// Postgres gets one statement of any size: 39 arrays `UNNEST`ed into rows, so the
/// statement is prepared once. SQLite gets multi-row `VALUES` with anonymous `?`
/// parameters (numbered ones cost a linear scan per bind), split into power-of-two
/// chunks so only a handful of statement shapes are ever prepared.
pub async fn insert_batch(tx: &mut Tx, records: &[&ExecutionRecord]) -> Result<(), DbError> {
    match tx {
        Tx::Postgres(tx) => insert_unnest(&mut **tx, records).await,
        Tx::Sqlite(tx) => {
            let mut rest = records;
            while !rest.is_empty() {
                // 39 parameters a row; SQLite allows 32,766 a statement.
                let (chunk, tail) = rest.split_at(super::chunk_size(rest.len(), 512));
                insert_values(&mut **tx, chunk).await?;
                rest = tail;
            }
            Ok(())
        }
    }
}

async fn insert_unnest(
    conn: &mut sqlx::PgConnection,
    rows: &[&ExecutionRecord],
) -> Result<(), DbError> {
    fn col<T>(rows: &[&ExecutionRecord], f: impl Fn(&ExecutionRecord) -> T) -> Vec<T> {
        rows.iter().map(|r| f(r)).collect()
    }
    sqlx::query(&format!(
        "INSERT INTO executions ({COLUMNS}) SELECT * FROM UNNEST(\
         $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
         $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bigint[], $14::text[], $15::bigint[], \
         $16::bigint[], $17::bigint[], $18::bigint[], $19::jsonb[], $20::timestamptz[], $21::timestamptz[], \
         $22::timestamptz[], $23::bigint[], $24::text[], $25::text[], $26::text[], \
         $27::text[], $28::text[], $29::int4[], $30::jsonb[], $31::bigint[], $32::bool[], $33::text[], $34::int4[], $35::text[], $36::text[], \
         $37::text[], $38::text[], $39::text[])"
    ))
    .bind(col(rows, |r| r.id.clone()))
    .bind(col(rows, |r| r.tenant_id.clone()))
    .bind(col(rows, |r| r.agent_id.clone()))
    .bind(col(rows, |r| r.agent_name.clone()))
    .bind(col(rows, |r| r.version_id.clone()))
    .bind(col(rows, |r| r.version.clone()))
    .bind(col(rows, |r| r.action.clone()))
    .bind(col(rows, |r| r.outcome.clone()))
    .bind(col(rows, |r| r.error_code.clone()))
    .bind(col(rows, |r| r.error_message.clone()))
    .bind(col(rows, |r| r.input_bytes))
    .bind(col(rows, |r| r.input_excerpt.clone()))
    .bind(col(rows, |r| r.output_bytes))
    .bind(col(rows, |r| r.output_excerpt.clone()))
    .bind(col(rows, |r| r.fuel))
    .bind(col(rows, |r| r.peak_memory_bytes))
    .bind(col(rows, |r| r.wall_time_us))
    .bind(col(rows, |r| r.log_bytes))
    .bind(col(rows, |r| r.logs.clone()))
    .bind(col(rows, |r| r.queued_at))
    .bind(col(rows, |r| r.started_at))
    .bind(col(rows, |r| r.finished_at))
    .bind(col(rows, |r| r.cost_picodollars))
    .bind(col(rows, |r| r.correlation_id.clone()))
    .bind(col(rows, |r| r.actor_key_id.clone()))
    .bind(col(rows, |r| r.idempotency_key.clone()))
    .bind(col(rows, |r| r.parent_execution_id.clone()))
    .bind(col(rows, |r| r.root_execution_id.clone()))
    .bind(col(rows, |r| r.call_depth))
    .bind(col(rows, |r| r.capabilities.clone()))
    .bind(col(rows, |r| r.replaced_characters))
    .bind(col(rows, |r| r.record_degraded))
    .bind(col(rows, |r| r.task_id.clone()))
    .bind(col(rows, |r| r.attempt))
    .bind(col(rows, |r| r.output.clone()))
    .bind(col(rows, |r| r.input.clone()))
    .bind(col(rows, |r| r.trace_id.clone()))
    .bind(col(rows, |r| r.span_id.clone()))
    .bind(col(rows, |r| r.parent_span_id.clone()))
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_values(
    conn: &mut sqlx::SqliteConnection,
    chunk: &[&ExecutionRecord],
) -> Result<(), DbError> {
    let row = format!("({})", vec!["?"; COLUMN_COUNT].join(", "));
    let sql = format!(
        "INSERT INTO executions ({COLUMNS}) VALUES {}",
        vec![row; chunk.len()].join(", ")
    );
    let mut query = sqlx::query(&sql);
    for r in chunk {
        query = query
            .bind(&r.id)
            .bind(&r.tenant_id)
            .bind(&r.agent_id)
            .bind(&r.agent_name)
            .bind(&r.version_id)
            .bind(&r.version)
            .bind(&r.action)
            .bind(&r.outcome)
            .bind(&r.error_code)
            .bind(&r.error_message)
            .bind(r.input_bytes)
            .bind(&r.input_excerpt)
            .bind(r.output_bytes)
            .bind(&r.output_excerpt)
            .bind(r.fuel)
            .bind(r.peak_memory_bytes)
            .bind(r.wall_time_us)
            .bind(r.log_bytes)
            .bind(&r.logs)
            .bind(r.queued_at)
            .bind(r.started_at)
            .bind(r.finished_at)
            .bind(r.cost_picodollars)
            .bind(&r.correlation_id)
            .bind(&r.actor_key_id)
            .bind(&r.idempotency_key)
            .bind(&r.parent_execution_id)
            .bind(&r.root_execution_id)
            .bind(r.call_depth)
            .bind(&r.capabilities)
            .bind(r.replaced_characters)
            .bind(r.record_degraded)
            .bind(&r.task_id)
            .bind(r.attempt)
            .bind(&r.output)
            .bind(&r.input)
            .bind(&r.trace_id)
            .bind(&r.span_id)
            .bind(&r.parent_span_id);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Filters for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    /// Only agents of this name, live or deleted: a deleted agent keeps its history,
    /// and a new agent may take its name.
    pub agent_name: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only this call tree (its root execution's id).
    pub root: Option<String>,
    /// Finished at or after.
    pub since: Option<DateTime<Utc>>,
    /// Finished before.
    pub until: Option<DateTime<Utc>>,
}

/// A tenant's executions, newest first, before the cursor id.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    filter: &ExecutionFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<ExecutionRecord>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM executions WHERE tenant_id = $1 AND id < $2 \
         AND ($3 IS NULL OR agent_id IN (SELECT id FROM agents WHERE tenant_id = $1 AND name = $3)) \
         AND ($4 IS NULL OR outcome = $4) \
         AND ($5 IS NULL OR correlation_id = $5) AND ($6 IS NULL OR finished_at >= $6) \
         AND ($7 IS NULL OR finished_at < $7) AND ($9 IS NULL OR root_execution_id = $9) \
         ORDER BY id DESC LIMIT $8"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, ExecutionRecord>(&sql)
        .bind(tenant_id)
        .bind(before.unwrap_or("~"))
        .bind(&filter.agent_name)
        .bind(&filter.outcome)
        .bind(&filter.correlation_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .bind(&filter.root)
        .fetch_all(conn)
        .await)?,
    )
}

/// One execution.
pub async fn get(db: &Db, tenant_id: &str, id: &str) -> Result<ExecutionRecord, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM executions WHERE tenant_id = $1 AND id = $2");
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, ExecutionRecord>(&sql).bind(tenant_id).bind(id).fetch_one(conn).await)
        .map_err(DbError::from_fetch)
}

/// How to bucket costs over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Calendar days (UTC).
    Day,
    /// ISO weeks starting Monday (UTC).
    Week,
    /// Calendar months (UTC).
    Month,
}

/// One bucket of aggregated cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CostRow {
    /// The agent's name.
    pub agent_name: String,
    /// The first day of the bucket, `YYYY-MM-DD`.
    pub period_start: String,
    /// Executions in the bucket.
    pub executions: i64,
    /// Fuel consumed.
    pub fuel: i64,
    /// Total wall time in microseconds.
    pub wall_time_us: i64,
    /// Cost in picodollars.
    pub cost_picodollars: i64,
}

/// Cost per agent and period over `[since, until)`. Bucketing is the one place
/// the two dialects differ.
pub async fn costs(
    db: &Db,
    tenant_id: &str,
    period: Period,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<CostRow>, DbError> {
    let bucket = match (db, period) {
        (Db::Postgres(_), Period::Day) => {
            "to_char(date_trunc('day', finished_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"
        }
        (Db::Postgres(_), Period::Week) => {
            "to_char(date_trunc('week', finished_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"
        }
        (Db::Postgres(_), Period::Month) => {
            "to_char(date_trunc('month', finished_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"
        }
        (Db::Sqlite(_), Period::Day) => "strftime('%Y-%m-%d', finished_at)",
        // The Monday on or before: step a day forward, on to the next Monday, back a week.
        (Db::Sqlite(_), Period::Week) => "date(finished_at, '+1 day', 'weekday 1', '-7 days')",
        (Db::Sqlite(_), Period::Month) => "strftime('%Y-%m-01', finished_at)",
    };
    let sql = format!(
        "SELECT agent_name, {bucket} AS period_start, COUNT(*) AS executions, \
         CAST(SUM(fuel) AS BIGINT) AS fuel, CAST(SUM(wall_time_us) AS BIGINT) AS wall_time_us, \
         CAST(SUM(cost_picodollars) AS BIGINT) AS cost_picodollars \
         FROM executions WHERE tenant_id = $1 AND finished_at >= $2 AND finished_at < $3 \
         GROUP BY agent_name, period_start ORDER BY period_start, agent_name"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, CostRow>(&sql)
        .bind(tenant_id)
        .bind(since)
        .bind(until)
        .fetch_all(conn)
        .await)?,
    )
}
