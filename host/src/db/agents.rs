//! Agents and their versions.
//!
//! An agent is a tenant's name for a line of component versions, with a status
//! (`active` / `paused`), a policy, and at most one active version. Deleting an agent
//! is soft: its versions and executions stay, and the name becomes free again.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;

use super::{Db, DbError, ResultExt, Tx, now};
use crate::policy::AgentPolicy;
use crate::{in_scope, on_tx};

/// An agent.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Agent {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its name, unique among the tenant's live agents.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// `active` or `paused`.
    pub status: String,
    /// Limits (and, later, grants) for its invocations.
    pub policy: Json<AgentPolicy>,
    /// The version invocations run unless they pin one.
    pub active_version_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
}

const AGENT_COLUMNS: &str = "id, tenant_id, name, description, status, policy, active_version_id, created_at, updated_at, deleted_at";

/// One uploaded version (the component bytes are fetched separately).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AgentVersion {
    /// Its id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its agent.
    pub agent_id: String,
    /// The semver version the component's `describe()` reported.
    pub version: String,
    /// sha256 of the component bytes.
    pub sha256: String,
    /// Size of the component.
    pub size_bytes: i64,
    /// The component's `describe()` metadata.
    pub metadata: Json<serde_json::Value>,
    /// The key that uploaded it.
    pub uploaded_by: Option<String>,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
}

const VERSION_COLUMNS: &str =
    "id, tenant_id, agent_id, version, sha256, size_bytes, metadata, uploaded_by, created_at";

/// Inserts a new agent.
pub async fn insert(tx: &mut Tx, agent: &Agent) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO agents (id, tenant_id, name, description, status, policy, active_version_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&agent.id)
        .bind(&agent.tenant_id)
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(&agent.status)
        .bind(&agent.policy)
        .bind(&agent.active_version_id)
        .bind(agent.created_at)
        .bind(agent.updated_at)
        .execute(conn)
        .await.map(|r| r.rows_affected()))
    .on_unique("an agent with this name already exists")?;
    Ok(())
}

/// One change to an agent. Each writes only its own column, so concurrent changes
/// (a pause and an activation, say) never overwrite each other with stale copies.
#[derive(Debug, Clone, Copy)]
pub enum AgentChange<'a> {
    /// `active` or `paused`.
    Status(&'a str),
    /// A new policy.
    Policy(&'a Json<AgentPolicy>),
    /// The version invocations run.
    ActiveVersion(&'a str),
}

/// Applies one change to a live agent.
pub async fn update(
    tx: &mut Tx,
    tenant_id: &str,
    id: &str,
    change: AgentChange<'_>,
) -> Result<(), DbError> {
    let column = match change {
        AgentChange::Status(_) => "status",
        AgentChange::Policy(_) => "policy",
        AgentChange::ActiveVersion(_) => "active_version_id",
    };
    let sql = format!(
        "UPDATE agents SET {column} = $1, updated_at = $2 \
         WHERE id = $3 AND tenant_id = $4 AND deleted_at IS NULL"
    );
    let done = on_tx!(tx, conn => {
        let query = sqlx::query(&sql);
        let query = match change {
            AgentChange::Status(status) => query.bind(status),
            AgentChange::Policy(policy) => query.bind(policy),
            AgentChange::ActiveVersion(version) => query.bind(version),
        };
        query
            .bind(now())
            .bind(id)
            .bind(tenant_id)
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    if done == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// Soft-deletes an agent.
pub async fn delete(tx: &mut Tx, tenant_id: &str, id: &str) -> Result<(), DbError> {
    let done = on_tx!(tx, conn => sqlx::query(
        "UPDATE agents SET deleted_at = $1, updated_at = $1 WHERE id = $2 AND tenant_id = $3 AND deleted_at IS NULL")
        .bind(now())
        .bind(id)
        .bind(tenant_id)
        .execute(conn)
        .await.map(|r| r.rows_affected()))?;
    if done == 0 {
        return Err(DbError::NotFound);
    }
    Ok(())
}

/// A tenant's live agent by name.
pub async fn by_name(db: &Db, tenant_id: &str, name: &str) -> Result<Agent, DbError> {
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL"
    );
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, Agent>(&sql).bind(tenant_id).bind(name).fetch_one(conn).await)
        .map_err(DbError::from_fetch)
}

/// A tenant's live agent by id.
/// [`by_name`] inside `tx`: a transaction that holds SQLite's write lock must not wait
/// for a second connection of the pool.
pub async fn by_name_in(tx: &mut Tx, tenant_id: &str, name: &str) -> Result<Agent, DbError> {
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL"
    );
    on_tx!(tx, conn => sqlx::query_as::<_, Agent>(&sql).bind(tenant_id).bind(name).fetch_one(conn).await)
        .map_err(DbError::from_fetch)
}

/// A tenant's live agent by id.
pub async fn by_id(db: &Db, tenant_id: &str, id: &str) -> Result<Agent, DbError> {
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
    );
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, Agent>(&sql).bind(tenant_id).bind(id).fetch_one(conn).await)
        .map_err(DbError::from_fetch)
}

/// A tenant's live agents in id order after `after`.
pub async fn list(
    db: &Db,
    tenant_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Agent>, DbError> {
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, Agent>(&sql)
        .bind(tenant_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// Inserts a version.
pub async fn insert_version(
    tx: &mut Tx,
    version: &AgentVersion,
    component: &[u8],
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO agent_versions (id, tenant_id, agent_id, version, sha256, size_bytes, metadata, component, uploaded_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(&version.id)
        .bind(&version.tenant_id)
        .bind(&version.agent_id)
        .bind(&version.version)
        .bind(&version.sha256)
        .bind(version.size_bytes)
        .bind(&version.metadata)
        .bind(component)
        .bind(&version.uploaded_by)
        .bind(version.created_at)
        .execute(conn)
        .await.map(|r| r.rows_affected()))
    .on_unique("this agent already has a different component with this version; bump the version")?;
    Ok(())
}

/// The agent's version with these bytes, if uploaded before.
pub async fn version_by_hash(
    db: &Db,
    tenant_id: &str,
    agent_id: &str,
    sha256: &str,
) -> Result<Option<AgentVersion>, DbError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM agent_versions WHERE tenant_id = $1 AND agent_id = $2 AND sha256 = $3"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, AgentVersion>(&sql)
        .bind(tenant_id)
        .bind(agent_id)
        .bind(sha256)
        .fetch_optional(conn)
        .await)?,
    )
}

/// One version of an agent, by id or by its semver string.
pub async fn version(
    db: &Db,
    tenant_id: &str,
    agent_id: &str,
    id_or_version: &str,
) -> Result<AgentVersion, DbError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM agent_versions WHERE tenant_id = $1 AND agent_id = $2 AND (id = $3 OR version = $3)"
    );
    in_scope!(db, tenant_id, conn => sqlx::query_as::<_, AgentVersion>(&sql)
        .bind(tenant_id)
        .bind(agent_id)
        .bind(id_or_version)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)
}

/// An agent's versions, newest first, before `before`.
pub async fn versions(
    db: &Db,
    tenant_id: &str,
    agent_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<AgentVersion>, DbError> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM agent_versions WHERE tenant_id = $1 AND agent_id = $2 AND id < $3 \
         ORDER BY id DESC LIMIT $4"
    );
    Ok(
        in_scope!(db, tenant_id, conn => sqlx::query_as::<_, AgentVersion>(&sql)
        .bind(tenant_id)
        .bind(agent_id)
        .bind(before.unwrap_or("~"))
        .bind(limit)
        .fetch_all(conn)
        .await)?,
    )
}

/// A version's component bytes.
pub async fn component(db: &Db, tenant_id: &str, version_id: &str) -> Result<Vec<u8>, DbError> {
    let row: (Vec<u8>,) = in_scope!(db, tenant_id, conn => sqlx::query_as(
        "SELECT component FROM agent_versions WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(version_id)
        .fetch_one(conn)
        .await)
    .map_err(DbError::from_fetch)?;
    Ok(row.0)
}

/// A tenant's live agents, counted.
pub async fn count_live(tx: &mut Tx, tenant_id: &str) -> Result<i64, DbError> {
    let row: (i64,) = on_tx!(tx, conn => sqlx::query_as(
        "SELECT COUNT(*) FROM agents WHERE tenant_id = $1 AND deleted_at IS NULL")
        .bind(tenant_id)
        .fetch_one(conn)
        .await)?;
    Ok(row.0)
}

/// The versions of a tenant's live agents: how many, and their bytes together.
pub async fn stored(tx: &mut Tx, tenant_id: &str) -> Result<(i64, i64), DbError> {
    let row: (i64, i64) = on_tx!(tx, conn => sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(v.size_bytes), 0) AS BIGINT) FROM agent_versions v \
         JOIN agents a ON a.id = v.agent_id \
         WHERE v.tenant_id = $1 AND a.deleted_at IS NULL")
        .bind(tenant_id)
        .fetch_one(conn)
        .await)?;
    Ok(row)
}
