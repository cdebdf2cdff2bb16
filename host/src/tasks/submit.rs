//! Submitting tasks: one, or a batch in one transaction (all or nothing), checked
//! before anything is stored — limits, retry policy, dependencies (which must be tasks
//! of the same tenant, or earlier-named tasks of the same batch, with no cycle), and
//! the tenant's cap on waiting tasks.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use utoipa::ToSchema;

use super::{Backoff, TaskError, TaskState};
use crate::api::ErrorCode;
use crate::db::agents::Agent;
use crate::db::tasks::{self, TaskRow};
use crate::db::tenants::Tenant;
use crate::db::{self, DbError};
use crate::invocations::{Actor, Invocations};
use crate::policy::LimitOverrides;

/// Most tasks in one batch.
pub const MAX_BATCH: usize = 1000;
/// Most attempts a task may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Priorities run from `-MAX_PRIORITY` to `MAX_PRIORITY`.
pub const MAX_PRIORITY: i32 = 1000;
/// Most dependencies of one task.
pub const MAX_DEPENDENCIES: usize = 100;

/// A task as submitted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The agent (in a batch; the path names it for a single submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A name for this task within its batch, for other tasks' `depends_on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The action.
    pub action: String,
    /// The input (default `{}`), passed to the guest exactly as sent.
    #[serde(default = "empty_object")]
    #[schema(value_type = serde_json::Value)]
    pub input: Box<RawValue>,
    /// Higher runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Not before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Per-attempt limits; each may only tighten the agent's (under the task timeout).
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Attempts in all (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Whether a timed-out attempt is retried (default true).
    #[serde(default = "yes")]
    pub retry_timeouts: bool,
    /// Whether a spent budget waits for its renewal instead of failing the task.
    #[serde(default)]
    pub wait_for_budget: bool,
    /// Tasks (ids, or keys of this batch) that must succeed first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The caller's correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".into()).expect("{} is JSON")
}

fn yes() -> bool {
    true
}

/// Why a submission was refused. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A field is invalid; `field` names it (with the task's index in a batch).
    #[error("{message}")]
    Invalid {
        /// The stable code.
        code: ErrorCode,
        /// What is wrong, naming the field.
        message: String,
    },
    /// No live agent of this name in the tenant.
    #[error("agent {0:?} was not found")]
    AgentNotFound(String),
    /// The tenant's cap on waiting tasks would be passed.
    #[error("the tenant may have at most {max} waiting tasks; {waiting} are waiting")]
    QueueFull {
        /// The cap.
        max: u64,
        /// Waiting now.
        waiting: i64,
    },
    /// The idempotency key was used for a different submission.
    #[error("this Idempotency-Key was used for a different submission")]
    KeyReused,
    /// Another submission with this key is being stored right now.
    #[error("a submission with this Idempotency-Key is being stored; retry")]
    InProgress,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn invalid(code: ErrorCode, message: String) -> SubmitError {
    SubmitError::Invalid { code, message }
}

/// Who submits, and where from.
#[derive(Debug, Clone)]
pub struct Submitter {
    /// The tenant and key.
    pub actor: Actor,
    /// The execution submitting it, when an agent does (with its call tree's root).
    pub parent: Option<(String, String)>,
}

/// Submits `specs` (each naming its agent) in one transaction. With an idempotency key,
/// a retry of the same submission returns the tasks it stored, and the key with
/// another submission is [`SubmitError::KeyReused`]. Returns the stored tasks and
/// whether they were stored now (`false`: a retry found them).
pub async fn submit(
    pipeline: &Invocations,
    submitter: &Submitter,
    specs: Vec<TaskSpec>,
    idempotency_key: Option<&str>,
) -> Result<(Vec<TaskRow>, bool), SubmitError> {
    let tenant_id = &submitter.actor.tenant_id;
    if specs.is_empty() || specs.len() > MAX_BATCH {
        return Err(invalid(
            ErrorCode::InvalidTasks,
            format!("a batch has 1 to {MAX_BATCH} tasks, not {}", specs.len()),
        ));
    }
    let hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&specs).expect("specs serialize"),
    ));
    let key_of = |i: usize| {
        idempotency_key.map(|k| {
            if specs.len() == 1 {
                k.to_string()
            } else {
                format!("{k}#{i}")
            }
        })
    };
    let now = pipeline.quotas.clock().now();
    let tenant = pipeline.tenant(tenant_id).await?;

    // Check everything that needs no transaction first.
    let mut agents = HashMap::new();
    let mut keys: HashMap<&str, usize> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = |field: &str| {
            if specs.len() == 1 {
                field.to_string()
            } else {
                format!("tasks[{i}].{field}")
            }
        };
        let name = spec.agent.clone().ok_or_else(|| {
            invalid(
                ErrorCode::InvalidTasks,
                format!("{} is required", at("agent")),
            )
        })?;
        if !agents.contains_key(&name) {
            let agent = match pipeline.agent(tenant_id, &name).await {
                Ok(agent) => agent,
                Err(DbError::NotFound) => return Err(SubmitError::AgentNotFound(name)),
                Err(e) => return Err(e.into()),
            };
            agents.insert(name.clone(), agent);
        }
        check(pipeline, &tenant, &agents[&name], spec, &at)?;
        if let Some(key) = &spec.key
            && keys.insert(key, i).is_some()
        {
            return Err(invalid(
                ErrorCode::InvalidTasks,
                format!("{} {key:?} is used twice", at("key")),
            ));
        }
    }
    let order = parents_first(&specs, &keys)?;

    let mut tx = pipeline.db.begin(tenant_id.as_str()).await?;
    if let Some(first) = key_of(0)
        && let Some(existing) = tasks::by_idempotency_key(&mut tx, tenant_id, &first).await?
    {
        if existing.request_hash.as_deref() != Some(hash.as_str()) {
            return Err(SubmitError::KeyReused);
        }
        let mut found = vec![existing];
        for i in 1..specs.len() {
            let key = key_of(i).expect("a key");
            found.extend(tasks::by_idempotency_key(&mut tx, tenant_id, &key).await?);
        }
        return Ok((found, false));
    }
    if let Some(max) = tenant.policy.0.caps.max_queued_tasks {
        tasks::lock_tenant(&mut tx, tenant_id).await?;
        let waiting = tasks::count_waiting(&mut tx, tenant_id).await?;
        if waiting as u64 + specs.len() as u64 > max {
            return Err(SubmitError::QueueFull { max, waiting });
        }
    }

    // Existing parents must be this tenant's tasks; their states decide the new ones'.
    let existing: Vec<String> = specs
        .iter()
        .flat_map(|s| &s.depends_on)
        .filter(|d| !keys.contains_key(d.as_str()))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let parents: HashMap<String, TaskState> = tasks::states(&mut tx, tenant_id, &existing)
        .await?
        .into_iter()
        .map(|(id, state)| (id, TaskState::parse(&state).unwrap_or(TaskState::Failed)))
        .collect();
    if let Some(missing) = existing.iter().find(|id| !parents.contains_key(*id)) {
        return Err(invalid(
            ErrorCode::InvalidDependency,
            format!(
                "depends_on names {missing:?}, which is not a task of this tenant nor a key of this batch"
            ),
        ));
    }

    let ids: Vec<String> = specs.iter().map(|_| db::new_id()).collect();
    let mut rows: Vec<Option<TaskRow>> = vec![None; specs.len()];
    let mut states: Vec<TaskState> = vec![TaskState::Queued; specs.len()];
    // Parents first: a dependant's state needs theirs, and its edges need their rows.
    for i in order {
        let spec = &specs[i];
        let agent = &agents[spec.agent.as_ref().expect("checked")];
        let mut depends_on = Vec::new();
        let mut pending = 0;
        let mut failed_parent = None;
        for parent in &spec.depends_on {
            let (id, state) = match keys.get(parent.as_str()) {
                Some(&j) => (ids[j].clone(), states[j]),
                None => (parent.clone(), parents[parent]),
            };
            match state {
                TaskState::Succeeded => {}
                TaskState::Failed | TaskState::Cancelled => {
                    failed_parent = Some((id.clone(), state))
                }
                _ => pending += 1,
            }
            if !depends_on.contains(&id) {
                depends_on.push(id);
            }
        }
        // Microseconds, as both databases keep them.
        let run_at = spec.run_at.map_or(now, |t| t.trunc_subsecs(6)).max(now);
        let (state, error, finished_at) = match failed_parent {
            Some((parent, why)) => (
                TaskState::Cancelled,
                Some(Json(TaskError::new(
                    "dependency_failed",
                    format!("task {parent} it depends on was {}", why.as_str()),
                    false,
                ))),
                Some(now),
            ),
            None if pending > 0 => (TaskState::Blocked, None, None),
            None if run_at > now => (TaskState::Scheduled, None, None),
            None => (TaskState::Queued, None, None),
        };
        states[i] = state;
        let mut row = new_row(spec, agent, submitter, ids[i].clone(), state, run_at, now);
        row.deps_pending = pending;
        row.idempotency_key = key_of(i);
        row.request_hash = idempotency_key.map(|_| hash.clone());
        row.outcome = failed_parent_outcome(state);
        row.error = error;
        row.finished_at = finished_at;
        tasks::insert(&mut tx, &row, &depends_on)
            .await
            .map_err(|e| match e {
                // Another submission with this key won the race: it is a retry.
                DbError::Internal(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    SubmitError::InProgress
                }
                e => e.into(),
            })?;
        rows[i] = Some(row);
    }
    let rows: Vec<TaskRow> = rows.into_iter().map(|r| r.expect("every task")).collect();
    let mut event = submitter
        .actor
        .event("task.submit", "task", Some(&rows[0].id));
    event.after = Some(Json(serde_json::json!({
        "tasks": rows.iter().map(|r| serde_json::json!({ "id": r.id, "agent": r.agent_name, "action": r.action, "state": r.state })).collect::<Vec<_>>(),
        "parent_execution_id": submitter.parent.as_ref().map(|p| &p.0),
    })));
    crate::db::audit::append(&mut tx, &event).await?;
    tasks::notify(&mut tx).await?;
    tx.commit().await?;
    Ok((rows, true))
}

/// Checks one task's fields against its agent's task limits, before anything is
/// stored; `at` names a field (with the task's place in its batch or workflow).
pub fn check(
    pipeline: &Invocations,
    tenant: &Tenant,
    agent: &Agent,
    spec: &TaskSpec,
    at: &dyn Fn(&str) -> String,
) -> Result<(), SubmitError> {
    if spec.action.is_empty() {
        return Err(invalid(
            ErrorCode::InvalidTasks,
            format!("{} must not be empty", at("action")),
        ));
    }
    if spec.priority.abs() > MAX_PRIORITY {
        return Err(invalid(
            ErrorCode::InvalidTasks,
            format!(
                "{} must be between -{MAX_PRIORITY} and {MAX_PRIORITY}",
                at("priority")
            ),
        ));
    }
    if let Some(n) = spec.max_attempts
        && !(1..=MAX_ATTEMPTS).contains(&n)
    {
        return Err(invalid(
            ErrorCode::InvalidTasks,
            format!(
                "{} must be between 1 and {MAX_ATTEMPTS}",
                at("max_attempts")
            ),
        ));
    }
    if let Some(backoff) = &spec.backoff {
        backoff
            .validate()
            .map_err(|m| invalid(ErrorCode::InvalidTasks, format!("{}: {m}", at("backoff"))))?;
    }
    if spec.depends_on.len() > MAX_DEPENDENCIES {
        return Err(invalid(
            ErrorCode::InvalidTasks,
            format!(
                "{} lists more than {MAX_DEPENDENCIES} tasks",
                at("depends_on")
            ),
        ));
    }
    spec.limits
        .validate(&pipeline.task_limits(tenant, agent))
        .map_err(|m| {
            invalid(
                ErrorCode::InvalidLimits,
                format!("{}: {m} (the agent's task limit)", at("limits")),
            )
        })?;
    Ok(())
}

/// A new task's row, waiting in `state` from `run_at`, with no dependencies, no
/// idempotency key and nothing run yet.
pub fn new_row(
    spec: &TaskSpec,
    agent: &Agent,
    submitter: &Submitter,
    id: String,
    state: TaskState,
    run_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> TaskRow {
    TaskRow {
        id,
        tenant_id: submitter.actor.tenant_id.clone(),
        agent_id: agent.id.clone(),
        agent_name: agent.name.clone(),
        action: spec.action.clone(),
        input: spec.input.get().to_string(),
        priority: spec.priority,
        state: state.as_str().into(),
        run_at,
        limits: Json(spec.limits),
        max_attempts: spec.max_attempts.unwrap_or(3) as i32,
        backoff: Json(spec.backoff.unwrap_or_default()),
        retry_timeouts: spec.retry_timeouts,
        wait_for_budget: spec.wait_for_budget,
        attempts: 0,
        deps_pending: 0,
        dependants: 0,
        correlation_id: spec.correlation_id.clone(),
        idempotency_key: None,
        request_hash: None,
        actor_key_id: submitter.actor.key_id.clone(),
        parent_execution_id: submitter.parent.as_ref().map(|p| p.0.clone()),
        root_execution_id: submitter.parent.as_ref().map(|p| p.1.clone()),
        lease_owner: None,
        lease_expires_at: None,
        cancel_requested: false,
        outcome: None,
        result: None,
        error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
        workflow_id: None,
        traceparent: submitter
            .actor
            .trace
            .as_ref()
            .map(crate::telemetry::context::traceparent),
    }
}

fn failed_parent_outcome(state: TaskState) -> Option<String> {
    (state == TaskState::Cancelled).then(|| "dependency_failed".into())
}

/// The batch's tasks, each after the batch tasks it depends on; or the refusal of a
/// cycle among them (tasks already stored cannot depend on new ones, so no other cycle
/// can form), naming the tasks in it.
fn parents_first(
    specs: &[TaskSpec],
    keys: &HashMap<&str, usize>,
) -> Result<Vec<usize>, SubmitError> {
    // 0: unvisited, 1: on the current path, 2: done.
    fn visit(
        i: usize,
        specs: &[TaskSpec],
        keys: &HashMap<&str, usize>,
        marks: &mut [u8],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        marks[i] = 1;
        path.push(i);
        for parent in &specs[i].depends_on {
            let Some(&j) = keys.get(parent.as_str()) else {
                continue;
            };
            match marks[j] {
                1 => {
                    let start = path.iter().position(|&p| p == j).expect("on the path");
                    return Err(path[start..].to_vec());
                }
                0 => visit(j, specs, keys, marks, path, order)?,
                _ => {}
            }
        }
        path.pop();
        marks[i] = 2;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![0u8; specs.len()];
    let mut order = Vec::with_capacity(specs.len());
    for i in 0..specs.len() {
        if marks[i] == 0 {
            visit(i, specs, keys, &mut marks, &mut Vec::new(), &mut order).map_err(|cycle| {
                let names: Vec<String> = cycle
                    .iter()
                    .map(|&i| {
                        specs[i]
                            .key
                            .clone()
                            .unwrap_or_else(|| format!("tasks[{i}]"))
                    })
                    .collect();
                invalid(
                    ErrorCode::DependencyCycle,
                    format!(
                        "the batch's dependencies form a cycle: {}",
                        names.join(" → ")
                    ),
                )
            })?;
        }
    }
    Ok(order)
}
