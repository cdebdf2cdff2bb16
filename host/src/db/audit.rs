//! The audit trail: append-only events for every state change and every denial.
//! The tables refuse UPDATE and DELETE (a trigger on each backend).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use utoipa::ToSchema;

use super::{Db, DbError, Tx};
use crate::{in_scope, on_tx};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct AuditEvent {
    /// Its id (time-ordered).
    pub id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The API key that acted, if the request was authenticated.
    pub actor_key_id: Option<String>,
    /// What was attempted, e.g. `agent.create`, `version.upload`, `auth.denied`.
    pub action: String,
    /// The kind of resource, e.g. `agent`.
    pub resource_type: String,
    /// The resource's id or name, if any.
    pub resource_id: Option<String>,
    /// The resource before the change.
    #[schema(value_type = Option<serde_json::Value>)]
    pub before: Option<Json<serde_json::Value>>,
    /// The resource after the change.
    #[schema(value_type = Option<serde_json::Value>)]
    pub after: Option<Json<serde_json::Value>>,
    /// `ok`, `denied` or `failed`.
    pub result: String,
    /// The request's id (`x-request-id`).
    pub request_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
}

impl AuditEvent {
    /// Replaces what the database cannot hold (NUL) in the event's text; returns how
    /// many characters were replaced.
    pub fn make_storable(&mut self) -> u64 {
        use super::text::{replace_nul_json, replace_nul_opt};
        let json = |v: &mut Option<Json<serde_json::Value>>| {
            v.as_mut().map_or(0, |Json(v)| replace_nul_json(v))
        };
        replace_nul_opt(&mut self.resource_id)
            + json(&mut self.before)
            + json(&mut self.after)
            + replace_nul_opt(&mut self.user_agent)
    }
}

const COLUMNS: &str = "id, tenant_id, occurred_at, actor_key_id, action, resource_type, resource_id, before, after, result, request_id, client_addr, user_agent";
const INSERT: &str = "INSERT INTO audit_events (id, tenant_id, occurred_at, actor_key_id, action, resource_type, resource_id, before, after, result, request_id, client_addr, user_agent) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

macro_rules! bind_event {
    ($query:expr, $e:expr) => {
        $query
            .bind(&$e.id)
            .bind(&$e.tenant_id)
            .bind($e.occurred_at)
            .bind(&$e.actor_key_id)
            .bind(&$e.action)
            .bind(&$e.resource_type)
            .bind(&$e.resource_id)
            .bind(&$e.before)
            .bind(&$e.after)
            .bind(&$e.result)
            .bind(&$e.request_id)
            .bind(&$e.client_addr)
            .bind(&$e.user_agent)
    };
}

/// Appends an event inside the transaction that makes the change.
pub async fn append(tx: &mut Tx, event: &AuditEvent) -> Result<(), DbError> {
    on_tx!(tx, conn => bind_event!(sqlx::query(INSERT), event).execute(conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Filters for listing events.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this actor key.
    pub actor_key_id: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Only this resource id.
    pub resource_id: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
}

/// A tenant's events, newest first, before the cursor id.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    filter: &AuditFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEvent>, DbError> {
    // Optional filters as `($n IS NULL OR col = $n)`, so one statement serves every
    // combination; placeholders appear in numeric order, as SQLite requires.
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events WHERE tenant_id = $1 AND id < $2 \
         AND ($3 IS NULL OR actor_key_id = $3) AND ($4 IS NULL OR action = $4) \
         AND ($5 IS NULL OR resource_type = $5) AND ($6 IS NULL OR resource_id = $6) \
         AND ($7 IS NULL OR occurred_at >= $7) AND ($8 IS NULL OR occurred_at < $8) \
         ORDER BY id DESC LIMIT $9"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, AuditEvent>(&sql)
        .bind(tenant_id)
        .bind(before.unwrap_or("~"))
        .bind(&filter.actor_key_id)
        .bind(&filter.action)
        .bind(&filter.resource_type)
        .bind(&filter.resource_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// Quota denials of a tenant (or of one of its agents) since `since`, by code.
pub async fn count_denials(
    db: &Db,
    tenant_id: &str,
    agent_id: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, DbError> {
    let code = match db {
        Db::Postgres(_) => "after->>'code'",
        Db::Sqlite(_) => "json_extract(after, '$.code')",
    };
    let sql = format!(
        "SELECT {code}, COUNT(*) FROM audit_events \
         WHERE tenant_id = $1 AND action = 'agent.invoke' AND result = 'denied' \
         AND occurred_at >= $2 AND ($3 IS NULL OR resource_id = $3) AND {code} IS NOT NULL \
         GROUP BY {code}"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, (String, i64)>(&sql)
        .bind(tenant_id)
        .bind(since)
        .bind(agent_id)
        .fetch_all(conn)
        .await)?,
    )
}
