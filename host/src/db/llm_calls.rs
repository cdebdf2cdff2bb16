//! Model calls, one row each, written with their execution in the group commit.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::executions::ExecutionRecord;
use super::{Db, DbError, Tx};
use crate::{in_scope, on_tx};

/// Stores the model calls of `records`, in the writer's transaction.
pub async fn insert_batch(tx: &mut Tx, records: &[&ExecutionRecord]) -> Result<(), DbError> {
    for record in records {
        for (seq, call) in record.llm_calls.iter().enumerate() {
            on_tx!(tx, conn => sqlx::query(
                "INSERT INTO llm_calls (execution_id, seq, tenant_id, agent_id, model, provider, \
                 provider_model, outcome, input_tokens, output_tokens, usage_estimated, \
                 cost_picodollars, latency_ms, attempts, finish_reason, request_id, error, finished_at, \
                 prompt, answer) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)")
                .bind(&record.id)
                .bind(seq as i32)
                .bind(&record.tenant_id)
                .bind(&record.agent_id)
                .bind(&call.model)
                .bind(&call.provider)
                .bind(&call.provider_model)
                .bind(&call.outcome)
                .bind(i64::try_from(call.input_tokens).unwrap_or(i64::MAX))
                .bind(i64::try_from(call.output_tokens).unwrap_or(i64::MAX))
                .bind(call.usage_estimated)
                .bind(call.cost_picodollars)
                .bind(i64::try_from(call.latency_ms).unwrap_or(i64::MAX))
                .bind(call.attempts as i32)
                .bind(&call.finish_reason)
                .bind(&call.request_id)
                .bind(&call.error)
                .bind(record.finished_at)
                .bind(&call.prompt)
                .bind(&call.answer)
                .execute(conn)
                .await
                .map(|r| r.rows_affected()))?;
        }
    }
    Ok(())
}

/// One stored model call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct LlmCallRow {
    /// Its place among its execution's calls, from 0.
    pub seq: i32,
    /// The alias asked for.
    pub model: String,
    /// The operator's provider.
    pub provider: String,
    /// The provider's model that answered (or was asked for).
    pub provider_model: String,
    /// `ok`, `provider_error`, `timeout` or `interrupted`.
    pub outcome: String,
    /// Input tokens charged.
    pub input_tokens: i64,
    /// Output tokens charged.
    pub output_tokens: i64,
    /// Whether the estimate was charged (no usage reported, or cut short).
    pub usage_estimated: bool,
    /// Cost in picodollars.
    pub cost_picodollars: i64,
    /// Milliseconds from sending to the answer, retries included.
    pub latency_ms: i64,
    /// HTTP attempts.
    pub attempts: i32,
    /// How the answer ended.
    pub finish_reason: String,
    /// The provider's request id.
    pub request_id: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
    /// When the execution finished.
    pub finished_at: DateTime<Utc>,
    /// The messages sent, when the agent's grant keeps prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The answer, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// The model calls of one of `tenant_id`'s executions, in order.
pub async fn of_execution(
    db: &Db,
    tenant_id: &str,
    execution_id: &str,
) -> Result<Vec<LlmCallRow>, DbError> {
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, LlmCallRow>(
        "SELECT seq, model, provider, provider_model, outcome, input_tokens, output_tokens, \
         usage_estimated, cost_picodollars, latency_ms, attempts, finish_reason, request_id, \
         error, finished_at, prompt, answer FROM llm_calls WHERE tenant_id = $1 AND execution_id = $2 ORDER BY seq")
        .bind(tenant_id)
        .bind(execution_id)
        .fetch_all(conn)
        .await)?,
    )
}

/// Model spend of one alias over a time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ModelCost {
    /// The alias.
    pub model: String,
    /// Calls sent.
    pub calls: i64,
    /// Input tokens charged.
    pub input_tokens: i64,
    /// Output tokens charged.
    pub output_tokens: i64,
    /// Cost in picodollars.
    pub cost_picodollars: i64,
}

/// `tenant_id`'s model spend per alias for executions that finished in `[since, until)`.
pub async fn costs_by_model(
    db: &Db,
    tenant_id: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<ModelCost>, DbError> {
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, ModelCost>(
        "SELECT model, COUNT(*) AS calls, CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
         CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
         CAST(SUM(cost_picodollars) AS BIGINT) AS cost_picodollars \
         FROM llm_calls WHERE tenant_id = $1 AND finished_at >= $2 AND finished_at < $3 \
         GROUP BY model ORDER BY model")
        .bind(tenant_id)
        .bind(since)
        .bind(until)
        .fetch_all(conn)
        .await)?,
    )
}
