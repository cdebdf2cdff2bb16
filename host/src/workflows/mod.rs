//! Workflows: named graphs of steps, each step one task, with data passed between them
//! ([`path`]), conditions ([`expr`]), and compensation when a workflow fails.
//!
//! - [`WorkflowSpec`] is what a caller submits or stores by name; [`validate`] checks
//!   all of it (steps, dependencies, cycles, paths, conditions, agents, each step's task
//!   fields) before anything is stored.
//! - [`start`] stores a workflow and enqueues the steps that may start; [`advance`]
//!   moves it on after any of its tasks ended: it records the ends, skips the steps
//!   whose condition is false, enqueues those now ready with their inputs built from
//!   stored outputs, and on a failure cancels what is left and compensates. [`cancel`]
//!   is a caller's cancellation. Each runs in one transaction that locks the workflow's
//!   row before any of its tasks' rows, so it is all-or-nothing, two nodes take turns,
//!   and none waits on another in a cycle.
//! - The group commit that records the end of one of a workflow's tasks moves the
//!   workflow on in the same transaction ([`advance_all`]: on Postgres over the
//!   workflows it locked first; on SQLite, whose write transaction holds the only write
//!   lock, read with their steps after the ends); a worker that records an end on its own (a host failure) runs [`advance`]
//!   after it; the [`advancer`] of every node sweeps every poll for workflows whose
//!   tasks ended without being advanced (a node died in between, a take-over, a
//!   cancellation, an advance that failed).
//!
//! Steps are tasks: they share the queue, workers, quotas, budgets, retries, leases and
//! crash recovery. A workflow is moved on only from what is committed — tasks' ends and
//! its own rows — so whichever node moves it, and however often, it ends the same way.

pub mod advancer;
pub mod expr;
pub mod path;

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::types::Json;
use utoipa::ToSchema;

use self::expr::Expr;
use self::path::{Data, template_steps};
use crate::api::ErrorCode;
use crate::db::tasks::{self, TaskRow};
use crate::db::workflows::{self as db, StepRow, WorkflowRow};
use crate::db::{DbError, Tx};
use crate::invocations::{Actor, AgentCache, Invocations, agent_in};
use crate::policy::LimitOverrides;
use crate::tasks::submit::{self, SubmitError, Submitter, TaskSpec};
use crate::tasks::{Backoff, TaskError, TaskState};

/// Most steps in one workflow.
pub const MAX_STEPS: usize = 200;

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Steps run or wait.
    Running,
    /// Every step succeeded or was skipped.
    Succeeded,
    /// A step failed (and there was nothing to compensate, or a compensation failed).
    Failed,
    /// A step failed (or it was cancelled): compensations run, last completed first.
    Compensating,
    /// Every compensation succeeded.
    Compensated,
    /// A caller cancelled it.
    Cancelled,
}

impl WorkflowState {
    /// Every state.
    pub const ALL: [WorkflowState; 6] = [
        WorkflowState::Running,
        WorkflowState::Succeeded,
        WorkflowState::Failed,
        WorkflowState::Compensating,
        WorkflowState::Compensated,
        WorkflowState::Cancelled,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Compensating => "compensating",
            WorkflowState::Compensated => "compensated",
            WorkflowState::Cancelled => "cancelled",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<WorkflowState> {
        WorkflowState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether it is over (no step or compensation will be started).
    pub fn is_final(self) -> bool {
        !matches!(self, WorkflowState::Running | WorkflowState::Compensating)
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for the steps it depends on.
    Pending,
    /// Its task is enqueued or running.
    Running,
    /// Its task succeeded: its output is kept.
    Succeeded,
    /// Its task failed.
    Failed,
    /// Its condition was false, or a step it depends on was skipped.
    Skipped,
    /// The workflow failed or was cancelled before it ended (or its task was cancelled).
    Cancelled,
}

impl StepState {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::Cancelled => "cancelled",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<StepState> {
        [
            StepState::Pending,
            StepState::Running,
            StepState::Succeeded,
            StepState::Failed,
            StepState::Skipped,
            StepState::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// A workflow's steps, as submitted or stored by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The steps, in any order (a step may depend on a later one).
    pub steps: Vec<StepSpec>,
    /// The workflow's output: a template over its input and steps' outputs (default:
    /// every succeeded step's output, by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Whether a cancellation compensates the completed steps, as a failure does.
    #[serde(default)]
    pub compensate_on_cancel: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the workflow: letters, digits, `_` and `-`, at most 64.
    pub name: String,
    /// The agent.
    pub agent: String,
    /// The action.
    pub action: String,
    /// The input: a template (see [`path`]); default `{}`.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Steps that must end (succeed or be skipped) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// A condition (see [`expr`]); the step is skipped unless it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The task's priority.
    #[serde(default)]
    pub priority: i32,
    /// Per-attempt limits; each may only tighten the agent's.
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
    /// Whether a spent budget waits for its renewal instead of failing the step.
    #[serde(default)]
    pub wait_for_budget: bool,
    /// What undoes this step once it succeeded, if the workflow fails later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<Compensation>,
}

/// A step's compensation: one task, run after the workflow failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Compensation {
    /// The agent.
    pub agent: String,
    /// The action.
    pub action: String,
    /// The input: a template that may read the step's own output.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Attempts in all (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn yes() -> bool {
    true
}

/// Why a workflow (or definition) was refused, or could not be found. Nothing was
/// stored.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// Something is invalid; the message names the step and field.
    #[error("{message}")]
    Invalid {
        /// The stable code.
        code: ErrorCode,
        /// What is wrong.
        message: String,
    },
    /// No such workflow, or stored definition.
    #[error("{0} was not found")]
    NotFound(String),
    /// The workflow has ended.
    #[error("workflow {0:?} has already ended")]
    Finished(String),
    /// The tenant's cap on waiting tasks would be passed.
    #[error("the tenant may have at most {max} waiting tasks; {waiting} are waiting")]
    QueueFull {
        /// The cap.
        max: u64,
        /// Waiting now.
        waiting: i64,
    },
    /// The idempotency key was used for another submission.
    #[error("this Idempotency-Key was used for a different submission")]
    KeyReused,
    /// Another submission with this key is being stored right now.
    #[error("a submission with this Idempotency-Key is being stored; retry")]
    InProgress,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn invalid(code: ErrorCode, message: String) -> WorkflowError {
    WorkflowError::Invalid { code, message }
}

impl From<SubmitError> for WorkflowError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid { code, message } => invalid(code, message),
            SubmitError::AgentNotFound(name) => invalid(
                ErrorCode::UnknownAgent,
                format!("agent {name:?} was not found"),
            ),
            SubmitError::QueueFull { max, waiting } => WorkflowError::QueueFull { max, waiting },
            SubmitError::KeyReused => WorkflowError::KeyReused,
            SubmitError::InProgress => WorkflowError::InProgress,
            SubmitError::Db(e) => WorkflowError::Db(e),
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks a whole workflow before anything is stored: names, dependencies (known, no
/// cycle), paths (only the workflow's input and the outputs of a step's ancestors),
/// conditions, agents (live agents of the tenant) and each step's task fields, as a
/// task submission checks them. Every refusal names the step.
pub async fn validate(
    pipeline: &Invocations,
    tenant_id: &str,
    spec: &WorkflowSpec,
) -> Result<(), WorkflowError> {
    if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
        return Err(invalid(
            ErrorCode::InvalidWorkflow,
            format!(
                "a workflow has 1 to {MAX_STEPS} steps, not {}",
                spec.steps.len()
            ),
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in spec.steps.iter().enumerate() {
        if !valid_name(&step.name) {
            return Err(invalid(
                ErrorCode::InvalidWorkflow,
                format!(
                    "steps[{i}].name {:?} must be 1 to 64 letters, digits, `_` or `-`",
                    step.name
                ),
            ));
        }
        if index.insert(&step.name, i).is_some() {
            return Err(invalid(
                ErrorCode::InvalidWorkflow,
                format!("step {:?} is named twice", step.name),
            ));
        }
    }
    for step in &spec.steps {
        for parent in &step.depends_on {
            if !index.contains_key(parent.as_str()) {
                return Err(invalid(
                    ErrorCode::UnknownStep,
                    format!(
                        "step {:?} depends on {parent:?}, which is not a step of this workflow",
                        step.name
                    ),
                ));
            }
        }
    }
    let order = parents_first(spec, &index)?;
    // Each step's ancestors, parents first.
    let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); spec.steps.len()];
    for &i in &order {
        let mut mine = BTreeSet::new();
        for parent in &spec.steps[i].depends_on {
            let j = index[parent.as_str()];
            mine.insert(j);
            mine.extend(ancestors[j].iter().copied());
        }
        ancestors[i] = mine;
    }
    let reads = |step: &StepSpec, field: &str, steps: BTreeSet<String>, own: Option<usize>| {
        let i = index[step.name.as_str()];
        for read in steps {
            let Some(&j) = index.get(read.as_str()) else {
                return Err(invalid(
                    ErrorCode::InvalidReference,
                    format!(
                        "step {:?}: {field} reads step {read:?}, which is not a step of this workflow",
                        step.name
                    ),
                ));
            };
            if !ancestors[i].contains(&j) && own != Some(j) {
                return Err(invalid(
                    ErrorCode::InvalidReference,
                    format!(
                        "step {:?}: {field} reads step {read:?}, which it does not depend on (directly or not)",
                        step.name
                    ),
                ));
            }
        }
        Ok(())
    };
    let tenant = pipeline.tenant(tenant_id).await?;
    let mut agents = HashMap::new();
    for step in &spec.steps {
        let name = &step.name;
        let steps = template_steps(&step.input).map_err(|e| {
            invalid(
                ErrorCode::InvalidReference,
                format!("step {name:?}: input: {e}"),
            )
        })?;
        reads(step, "input", steps, None)?;
        if let Some(when) = &step.when {
            let condition = Expr::parse(when).map_err(|e| {
                invalid(
                    ErrorCode::InvalidCondition,
                    format!("step {name:?}: when: {e}"),
                )
            })?;
            let steps = condition
                .paths()
                .into_iter()
                .filter_map(|p| p.step().map(str::to_string))
                .collect();
            reads(step, "when", steps, None)?;
        }
        let agent = agent_of(pipeline, &mut agents, tenant_id, name, &step.agent).await?;
        let task = task_spec(
            step,
            RawValue::from_string("{}".into()).expect("JSON"),
            None,
        );
        submit::check(pipeline, &tenant, &agent, &task, &|field| {
            format!("step {name:?}: {field}")
        })?;
        if let Some(compensation) = &step.compensate {
            let steps = template_steps(&compensation.input).map_err(|e| {
                invalid(
                    ErrorCode::InvalidReference,
                    format!("step {name:?}: compensate.input: {e}"),
                )
            })?;
            reads(step, "compensate.input", steps, Some(index[name.as_str()]))?;
            let agent =
                agent_of(pipeline, &mut agents, tenant_id, name, &compensation.agent).await?;
            let task = compensation_spec(
                compensation,
                RawValue::from_string("{}".into()).expect("JSON"),
                None,
            );
            submit::check(pipeline, &tenant, &agent, &task, &|field| {
                format!("step {name:?}: compensate.{field}")
            })?;
        }
    }
    if let Some(output) = &spec.output {
        for read in template_steps(output)
            .map_err(|e| invalid(ErrorCode::InvalidReference, format!("output: {e}")))?
        {
            if !index.contains_key(read.as_str()) {
                return Err(invalid(
                    ErrorCode::InvalidReference,
                    format!("output reads step {read:?}, which is not a step of this workflow"),
                ));
            }
        }
    }
    Ok(())
}

async fn agent_of(
    pipeline: &Invocations,
    agents: &mut HashMap<String, crate::db::agents::Agent>,
    tenant_id: &str,
    step: &str,
    name: &str,
) -> Result<crate::db::agents::Agent, WorkflowError> {
    if let Some(agent) = agents.get(name) {
        return Ok(agent.clone());
    }
    match pipeline.agent(tenant_id, name).await {
        Ok(agent) => {
            agents.insert(name.to_string(), agent.clone());
            Ok(agent)
        }
        Err(DbError::NotFound) => Err(invalid(
            ErrorCode::UnknownAgent,
            format!("step {step:?}: agent {name:?} was not found in this tenant"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The steps, each after those it depends on; or the refusal of a cycle, naming it.
fn parents_first(
    spec: &WorkflowSpec,
    index: &HashMap<&str, usize>,
) -> Result<Vec<usize>, WorkflowError> {
    // 0: unvisited, 1: on the current path, 2: done.
    fn visit(
        i: usize,
        spec: &WorkflowSpec,
        index: &HashMap<&str, usize>,
        marks: &mut [u8],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        marks[i] = 1;
        path.push(i);
        for parent in &spec.steps[i].depends_on {
            let j = index[parent.as_str()];
            match marks[j] {
                1 => {
                    let start = path.iter().position(|&p| p == j).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(j);
                    return Err(cycle);
                }
                0 => visit(j, spec, index, marks, path, order)?,
                _ => {}
            }
        }
        path.pop();
        marks[i] = 2;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![0u8; spec.steps.len()];
    let mut order = Vec::with_capacity(spec.steps.len());
    for i in 0..spec.steps.len() {
        if marks[i] == 0 {
            visit(i, spec, index, &mut marks, &mut Vec::new(), &mut order).map_err(|cycle| {
                let names: Vec<&str> = cycle.iter().map(|&i| spec.steps[i].name.as_str()).collect();
                invalid(
                    ErrorCode::WorkflowCycle,
                    format!(
                        "step {:?} depends on itself: {}",
                        names[0],
                        names.join(" → ")
                    ),
                )
            })?;
        }
    }
    Ok(order)
}

fn task_spec(step: &StepSpec, input: Box<RawValue>, correlation_id: Option<String>) -> TaskSpec {
    TaskSpec {
        agent: Some(step.agent.clone()),
        key: None,
        action: step.action.clone(),
        input,
        priority: step.priority,
        run_at: None,
        limits: step.limits,
        max_attempts: step.max_attempts,
        backoff: step.backoff,
        retry_timeouts: step.retry_timeouts,
        wait_for_budget: step.wait_for_budget,
        depends_on: Vec::new(),
        correlation_id,
    }
}

fn compensation_spec(
    c: &Compensation,
    input: Box<RawValue>,
    correlation_id: Option<String>,
) -> TaskSpec {
    TaskSpec {
        agent: Some(c.agent.clone()),
        key: None,
        action: c.action.clone(),
        input,
        priority: 0,
        run_at: None,
        limits: LimitOverrides::default(),
        max_attempts: c.max_attempts,
        backoff: None,
        retry_timeouts: true,
        wait_for_budget: false,
        depends_on: Vec::new(),
        correlation_id,
    }
}

/// A workflow to start.
#[derive(Debug, Clone)]
pub struct Start {
    /// Its steps.
    pub spec: WorkflowSpec,
    /// The stored definition it comes from: (name, version).
    pub definition: Option<(String, i32)>,
    /// Its input.
    pub input: Value,
    /// The caller's correlation id.
    pub correlation_id: Option<String>,
    /// The schedule starting it.
    pub schedule_id: Option<String>,
}

/// Stores a workflow (already validated) in `tx` and enqueues the steps that may start.
/// With an idempotency key, a retry of the same submission returns the workflow it
/// stored.
pub async fn start(
    tx: &mut Tx,
    pipeline: &Invocations,
    actor: &Actor,
    start: Start,
    idempotency: Option<(&str, &str)>,
) -> Result<Started, WorkflowError> {
    let tenant_id = &actor.tenant_id;
    if let Some((key, hash)) = idempotency
        && let Some(existing) = db::by_idempotency_key(tx, tenant_id, key).await?
    {
        if existing.request_hash.as_deref() != Some(hash) {
            return Err(WorkflowError::KeyReused);
        }
        return Ok(Started::Before(existing));
    }
    let tenant = pipeline.tenant_in(tx, tenant_id).await?;
    if let Some(max) = tenant.policy.0.caps.max_queued_tasks {
        tasks::lock_tenant(tx, tenant_id).await?;
        let waiting = tasks::count_waiting(tx, tenant_id).await?;
        if waiting as u64 + start.spec.steps.len() as u64 > max {
            return Err(WorkflowError::QueueFull { max, waiting });
        }
    }
    let now = pipeline.quotas.clock().now();
    let row = WorkflowRow {
        id: crate::db::new_id(),
        tenant_id: tenant_id.clone(),
        definition_name: start.definition.as_ref().map(|d| d.0.clone()),
        definition_version: start.definition.as_ref().map(|d| d.1),
        definition: Json(Arc::new(start.spec)),
        input: start.input.to_string(),
        state: WorkflowState::Running.as_str().into(),
        output: None,
        error: None,
        cancel_requested: false,
        correlation_id: start.correlation_id,
        idempotency_key: idempotency.map(|(k, _)| k.to_string()),
        request_hash: idempotency.map(|(_, h)| h.to_string()),
        actor_key_id: actor.key_id.clone(),
        schedule_id: start.schedule_id,
        created_at: now,
        updated_at: now,
        finished_at: None,
    };
    let names: Vec<String> = row
        .definition
        .steps
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let steps = db::insert(tx, &row, &names).await.map_err(|e| match e {
        DbError::Internal(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            WorkflowError::InProgress
        }
        e => e.into(),
    })?;
    let mut event = actor.event("workflow.submit", "workflow", Some(&row.id));
    event.after = Some(Json(serde_json::json!({
        "definition": row.definition_name,
        "version": row.definition_version,
        "steps": names,
        "schedule_id": row.schedule_id,
    })));
    crate::db::audit::append(tx, &event).await?;
    let mut writes = Writes::default();
    let advanced = advance_locked(tx, &pipeline.agents, row, steps, now, &mut writes).await?;
    writes.flush(tx).await?;
    if advanced.enqueued {
        tasks::notify(tx).await?;
    }
    Ok(Started::New(advanced.workflow, advanced.steps))
}

/// What [`start`] did.
#[derive(Debug)]
pub enum Started {
    /// Stored the workflow: as it is when `start`'s transaction commits, with its steps.
    New(WorkflowRow, Vec<StepRow>),
    /// Found the workflow an earlier submission with the same idempotency key stored.
    Before(WorkflowRow),
}

/// Moves a workflow on in its own transaction: records the ends of its tasks, starts
/// what is ready, and ends it when nothing is left. Idempotent: with nothing new it
/// changes nothing. Returns whether it enqueued any task.
pub async fn advance(
    pipeline: &Invocations,
    tenant_id: &str,
    id: &str,
) -> Result<bool, WorkflowError> {
    let mut tx = pipeline.db.begin(tenant_id).await?;
    let workflow = match db::lock(&mut tx, tenant_id, id).await {
        Ok(w) => w,
        Err(DbError::NotFound) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let now = pipeline.quotas.clock().now();
    let steps = db::steps(&mut tx, id).await?;
    let mut writes = Writes::default();
    let enqueued = advance_locked(&mut tx, &pipeline.agents, workflow, steps, now, &mut writes)
        .await?
        .enqueued;
    writes.flush(&mut tx).await?;
    if enqueued {
        tasks::notify(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(enqueued)
}

/// Moves on `workflows` (with their steps) in `tx`, the transaction that recorded the
/// ends of their tasks (on Postgres, they were locked with [`db::lock_all`] before
/// those ends were written). What they decide is written at once ([`Writes`]).
/// Returns whether any task was enqueued. No `NOTIFY`: as for a plain task's released
/// dependants, the node that recorded the ends claims what they started (its workers
/// are woken when their attempts' records commit), and other nodes find it when they
/// next look.
pub async fn advance_all(
    tx: &mut Tx,
    agents: &AgentCache,
    workflows: Vec<(WorkflowRow, Vec<StepRow>)>,
    now: DateTime<Utc>,
) -> Result<bool, WorkflowError> {
    let mut enqueued = false;
    let mut writes = Writes::default();
    for (workflow, steps) in workflows {
        enqueued |= advance_locked(tx, agents, workflow, steps, now, &mut writes)
            .await?
            .enqueued;
    }
    writes.flush(tx).await?;
    Ok(enqueued)
}

/// Cancels a running workflow: its pending steps are cancelled, its running steps'
/// tasks are cancelled (or asked to stop), and, if it asks for it, its completed steps
/// are compensated once nothing runs.
pub async fn cancel(
    tx: &mut Tx,
    pipeline: &Invocations,
    actor: &Actor,
    id: &str,
) -> Result<WorkflowRow, WorkflowError> {
    let tenant_id = &actor.tenant_id;
    let mut workflow = db::lock(tx, tenant_id, id).await.map_err(|e| match e {
        DbError::NotFound => WorkflowError::NotFound(format!("workflow {id:?}")),
        e => e.into(),
    })?;
    if workflow.state != WorkflowState::Running.as_str() {
        return Err(WorkflowError::Finished(id.to_string()));
    }
    let now = pipeline.quotas.clock().now();
    let spec = workflow.definition.0.clone();
    let mut steps = db::steps(tx, id).await?;
    let before = (workflow.progress(), steps.clone());
    record_ends(&mut steps, now);
    workflow.cancel_requested = true;
    let error = TaskError::new("cancelled", "the workflow was cancelled", false);
    stop(
        tx,
        &mut workflow,
        &mut steps,
        &spec,
        error,
        spec.compensate_on_cancel,
        now,
    )
    .await?;
    let mut writes = Writes::default();
    let mut event = actor.event("workflow.cancel", "workflow", Some(id));
    event.after = Some(Json(serde_json::json!({ "state": workflow.state })));
    crate::db::audit::append(tx, &event).await?;
    settle(
        tx,
        &pipeline.agents,
        &mut workflow,
        &mut steps,
        &spec,
        now,
        &mut writes,
    )
    .await?;
    workflow.updated_at = now;
    writes.save(&before, &workflow, &steps);
    writes.flush(tx).await?;
    Ok(workflow)
}

/// The data paths read: the workflow's input and its steps' outputs and states, each
/// JSON text parsed only if a path reads it.
struct Snapshot<'a> {
    input: Parsed<'a>,
    outputs: HashMap<&'a str, Parsed<'a>>,
    states: HashMap<&'a str, &'a str>,
}

/// JSON text, parsed the first time it is read.
struct Parsed<'a> {
    text: &'a str,
    value: OnceCell<Value>,
}

impl<'a> Parsed<'a> {
    fn new(text: &'a str) -> Self {
        Parsed {
            text,
            value: OnceCell::new(),
        }
    }

    fn get(&self) -> &Value {
        self.value
            .get_or_init(|| serde_json::from_str(self.text).unwrap_or(Value::Null))
    }
}

impl Data for Snapshot<'_> {
    fn input(&self) -> &Value {
        self.input.get()
    }
    fn output(&self, step: &str) -> Option<&Value> {
        self.outputs.get(step).map(Parsed::get)
    }
    fn state(&self, step: &str) -> Option<&str> {
        self.states.get(step).copied()
    }
}

fn snapshot<'a>(workflow: &'a WorkflowRow, steps: &'a [StepRow]) -> Snapshot<'a> {
    Snapshot {
        input: Parsed::new(&workflow.input),
        outputs: steps
            .iter()
            .filter_map(|s| Some((s.name.as_str(), Parsed::new(s.output.as_deref()?))))
            .collect(),
        states: steps
            .iter()
            .map(|s| (s.name.as_str(), s.state.as_str()))
            .collect(),
    }
}

fn state_of(step: &StepRow) -> StepState {
    StepState::parse(&step.state).unwrap_or(StepState::Failed)
}

fn set_state(step: &mut StepRow, state: StepState, error: Option<TaskError>, now: DateTime<Utc>) {
    step.state = state.as_str().into();
    step.error = error.map(Json);
    if !matches!(state, StepState::Pending | StepState::Running) {
        step.finished_at = Some(now);
    }
}

/// Records the steps and compensations whose task has ended.
fn record_ends(steps: &mut [StepRow], now: DateTime<Utc>) {
    let mut next_seq = steps
        .iter()
        .filter_map(|s| s.completed_seq)
        .max()
        .unwrap_or(0)
        + 1;
    for step in steps.iter_mut() {
        if state_of(step) == StepState::Running
            && let Some(task_state) = step.task_state.as_deref().and_then(TaskState::parse)
            && task_state.is_final()
        {
            match task_state {
                TaskState::Succeeded => {
                    step.completed_seq = Some(next_seq);
                    next_seq += 1;
                    step.output = step.task_result.clone();
                    set_state(step, StepState::Succeeded, None, now);
                }
                TaskState::Failed => {
                    let error = step.task_error.clone().map(|e| e.0);
                    set_state(step, StepState::Failed, error, now);
                }
                _ => {
                    let error = step.task_error.clone().map(|e| e.0);
                    set_state(step, StepState::Cancelled, error, now);
                }
            }
        }
        if step.compensation_state.as_deref() == Some("running")
            && let Some(task_state) = step
                .compensation_task_state
                .as_deref()
                .and_then(TaskState::parse)
            && task_state.is_final()
        {
            step.compensation_state = Some(
                if task_state == TaskState::Succeeded {
                    "succeeded"
                } else {
                    "failed"
                }
                .into(),
            );
        }
    }
}

/// The workflow stops starting steps: pending ones are cancelled, running ones'
/// tasks cancelled; it compensates (if `compensate` and any completed step has a
/// compensation) or ends as failed or cancelled.
async fn stop(
    tx: &mut Tx,
    workflow: &mut WorkflowRow,
    steps: &mut [StepRow],
    spec: &WorkflowSpec,
    error: TaskError,
    compensate: bool,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let cancelled_by_workflow = TaskError::new(
        "workflow_stopped",
        format!("the workflow stopped: {}", error.message),
        false,
    );
    for step in steps.iter_mut() {
        match state_of(step) {
            StepState::Pending => set_state(
                step,
                StepState::Cancelled,
                Some(cancelled_by_workflow.clone()),
                now,
            ),
            StepState::Running => {
                // A waiting task is cancelled now; a running one when its node stops
                // it, and its end is recorded by a later advance.
                if let Some(task) = step.task_id.clone()
                    && tasks::cancel(tx, &workflow.tenant_id, &task, now).await?
                        == tasks::Cancelled::Now
                {
                    set_state(
                        step,
                        StepState::Cancelled,
                        Some(cancelled_by_workflow.clone()),
                        now,
                    );
                }
            }
            _ => {}
        }
    }
    let has_compensation = |step: &StepRow| {
        spec.steps
            .iter()
            .any(|s| s.name == step.name && s.compensate.is_some())
    };
    // A running step may still succeed (its end may beat the cancellation): it is
    // compensated then too.
    let to_compensate = compensate
        && steps.iter().any(|s| {
            matches!(state_of(s), StepState::Succeeded | StepState::Running) && has_compensation(s)
        });
    let is_cancel = error.code == "cancelled";
    workflow.error = Some(Json(error));
    workflow.state = if to_compensate {
        WorkflowState::Compensating
    } else if is_cancel {
        WorkflowState::Cancelled
    } else {
        WorkflowState::Failed
    }
    .as_str()
    .into();
    workflow.updated_at = now;
    if !to_compensate {
        workflow.finished_at = Some(now);
    }
    Ok(())
}

/// Moves a locked workflow on (see [`advance`]); returns whether it enqueued a task,
/// and leaves telling the workers to the caller.
async fn advance_locked(
    tx: &mut Tx,
    agents: &AgentCache,
    mut workflow: WorkflowRow,
    mut steps: Vec<StepRow>,
    now: DateTime<Utc>,
    writes: &mut Writes,
) -> Result<Advanced, WorkflowError> {
    let spec = workflow.definition.0.clone();
    let before = (workflow.progress(), steps.clone());
    record_ends(&mut steps, now);
    let enqueued = settle(tx, agents, &mut workflow, &mut steps, &spec, now, writes).await?;
    if workflow.progress() != before.0 {
        workflow.updated_at = now;
    }
    writes.save(&before, &workflow, &steps);
    Ok(Advanced {
        workflow,
        steps,
        enqueued,
    })
}

/// A workflow and its steps as an advance left (and wrote) them.
struct Advanced {
    workflow: WorkflowRow,
    steps: Vec<StepRow>,
    /// Whether a task was enqueued.
    enqueued: bool,
}

/// What advances decided to write, written by [`Writes::flush`]: the tasks they
/// enqueued, then the workflows and steps that changed. In a group commit one flush
/// serves every workflow of the batch, so a batch's next steps cost a few multi-row
/// statements (on SQLite, one round trip) rather than a few statements each.
#[derive(Default)]
struct Writes {
    tasks: Vec<TaskRow>,
    workflows: Vec<WorkflowRow>,
    steps: Vec<StepRow>,
}

impl Writes {
    /// Keeps the workflow and the steps that changed since `before`, to be written.
    fn save(
        &mut self,
        before: &(db::Progress, Vec<StepRow>),
        workflow: &WorkflowRow,
        steps: &[StepRow],
    ) {
        if workflow.progress() != before.0 {
            self.workflows.push(workflow.clone());
        }
        self.steps.extend(
            steps
                .iter()
                .zip(&before.1)
                .filter(|(step, old)| step != old)
                .map(|(step, _)| step.clone()),
        );
    }

    /// Inserts the tasks enqueued so far (before anything reads or changes them).
    async fn insert_tasks(&mut self, tx: &mut Tx) -> Result<(), DbError> {
        tasks::insert_all(tx, &self.tasks).await?;
        self.tasks.clear();
        Ok(())
    }

    /// Writes everything kept (see [`db::write_advances`]).
    async fn flush(self, tx: &mut Tx) -> Result<(), DbError> {
        db::write_advances(tx, &self.tasks, &self.workflows, &self.steps).await
    }
}

/// Decides what comes next from the recorded states, until nothing changes: fails the
/// workflow on a failed step, skips and enqueues ready steps, ends it when all ended,
/// and runs compensations one at a time, last completed first.
async fn settle(
    tx: &mut Tx,
    agents: &AgentCache,
    workflow: &mut WorkflowRow,
    steps: &mut [StepRow],
    spec: &WorkflowSpec,
    now: DateTime<Utc>,
    writes: &mut Writes,
) -> Result<bool, WorkflowError> {
    let mut enqueued = false;
    let by_name: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    let spec_of = |name: &str| {
        spec.steps
            .iter()
            .find(|s| s.name == name)
            .expect("a stored step is in its definition")
    };
    if workflow.state == WorkflowState::Running.as_str() {
        loop {
            if let Some(failed) = steps
                .iter()
                .find(|s| matches!(state_of(s), StepState::Failed | StepState::Cancelled))
            {
                let why = failed.error.as_ref().map(|e| e.0.clone());
                let error = TaskError::new(
                    "step_failed",
                    format!(
                        "step {:?} {}{}",
                        failed.name,
                        failed.state,
                        why.map(|e| format!(": {} ({})", e.message, e.code))
                            .unwrap_or_default()
                    ),
                    false,
                );
                // The steps it stops may include one this advance started: its task
                // is written first, so it is there to be cancelled.
                writes.insert_tasks(tx).await?;
                stop(tx, workflow, steps, spec, error, true, now).await?;
                break;
            }
            let mut changed = false;
            for i in 0..steps.len() {
                if state_of(&steps[i]) != StepState::Pending {
                    continue;
                }
                let step = spec_of(&steps[i].name);
                let parents: Vec<StepState> = step
                    .depends_on
                    .iter()
                    .map(|p| state_of(&steps[by_name[p]]))
                    .collect();
                if !parents
                    .iter()
                    .all(|s| matches!(s, StepState::Succeeded | StepState::Skipped))
                {
                    continue;
                }
                changed = true;
                if let Some(p) = step
                    .depends_on
                    .iter()
                    .find(|p| state_of(&steps[by_name[*p]]) == StepState::Skipped)
                {
                    let why = TaskError::new(
                        "dependency_skipped",
                        format!("step {p:?} it depends on was skipped"),
                        false,
                    );
                    set_state(&mut steps[i], StepState::Skipped, Some(why), now);
                    continue;
                }
                let data = snapshot(workflow, steps);
                if let Some(when) = &step.when {
                    let holds = Expr::parse(when).map(|c| c.holds(&data)).unwrap_or(false);
                    if !holds {
                        drop(data);
                        let why = TaskError::new(
                            "condition_false",
                            format!("its condition {when:?} did not hold"),
                            false,
                        );
                        set_state(&mut steps[i], StepState::Skipped, Some(why), now);
                        continue;
                    }
                }
                let input = path::resolve(&step.input, &data);
                drop(data);
                let correlation = workflow
                    .correlation_id
                    .clone()
                    .or_else(|| Some(workflow.id.clone()));
                match input {
                    Ok(input) => {
                        let raw = RawValue::from_string(input.to_string()).expect("JSON");
                        let task = task_spec(step, raw, correlation);
                        match enqueue(tx, agents, workflow, &task, now, writes).await? {
                            Ok(id) => {
                                steps[i].task_id = Some(id);
                                steps[i].started_at = Some(now);
                                set_state(&mut steps[i], StepState::Running, None, now);
                                enqueued = true;
                            }
                            Err(error) => {
                                set_state(&mut steps[i], StepState::Failed, Some(error), now)
                            }
                        }
                    }
                    Err(e) => {
                        let error = TaskError::new("unresolved_path", format!("input: {e}"), false);
                        set_state(&mut steps[i], StepState::Failed, Some(error), now);
                    }
                }
            }
            if !changed {
                break;
            }
        }
        if workflow.state == WorkflowState::Running.as_str()
            && steps
                .iter()
                .all(|s| matches!(state_of(s), StepState::Succeeded | StepState::Skipped))
        {
            let data = snapshot(workflow, steps);
            let output = match &spec.output {
                Some(template) => path::resolve(template, &data),
                None => Ok(Value::Object(
                    data.outputs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.get().clone()))
                        .collect(),
                )),
            };
            drop(data);
            match output {
                Ok(output) => {
                    workflow.output = Some(output.to_string());
                    workflow.state = WorkflowState::Succeeded.as_str().into();
                }
                Err(e) => {
                    workflow.error = Some(Json(TaskError::new(
                        "unresolved_path",
                        format!("output: {e}"),
                        false,
                    )));
                    workflow.state = WorkflowState::Failed.as_str().into();
                }
            }
            workflow.finished_at = Some(now);
        }
    }
    if workflow.state == WorkflowState::Compensating.as_str() {
        let busy = steps.iter().any(|s| {
            state_of(s) == StepState::Running || s.compensation_state.as_deref() == Some("running")
        });
        if !busy {
            // The next to compensate: the latest completed step not yet compensated.
            let next = steps
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    state_of(s) == StepState::Succeeded
                        && s.compensation_state.is_none()
                        && spec_of(&s.name).compensate.is_some()
                })
                .max_by_key(|(_, s)| s.completed_seq)
                .map(|(i, _)| i);
            match next {
                Some(i) => {
                    let compensation = spec_of(&steps[i].name)
                        .compensate
                        .clone()
                        .expect("filtered");
                    let data = snapshot(workflow, steps);
                    let input = path::resolve(&compensation.input, &data);
                    drop(data);
                    let correlation = workflow
                        .correlation_id
                        .clone()
                        .or_else(|| Some(workflow.id.clone()));
                    let started = match input {
                        Ok(input) => {
                            let raw = RawValue::from_string(input.to_string()).expect("JSON");
                            let task = compensation_spec(&compensation, raw, correlation);
                            enqueue(tx, agents, workflow, &task, now, writes)
                                .await?
                                .ok()
                        }
                        Err(_) => None,
                    };
                    match started {
                        Some(id) => {
                            steps[i].compensation_task_id = Some(id);
                            steps[i].compensation_state = Some("running".into());
                            enqueued = true;
                        }
                        // It cannot start: recorded failed, and the next one is tried
                        // by the next advance (now, through the recursion below).
                        None => {
                            steps[i].compensation_state = Some("failed".into());
                            return Box::pin(settle(
                                tx, agents, workflow, steps, spec, now, writes,
                            ))
                            .await
                            .map(|more| more || enqueued);
                        }
                    }
                }
                None => {
                    let ran: Vec<&str> = steps
                        .iter()
                        .filter_map(|s| s.compensation_state.as_deref())
                        .collect();
                    let cancelled = workflow
                        .error
                        .as_ref()
                        .is_some_and(|e| e.0.code == "cancelled");
                    workflow.state = if ran.is_empty() && cancelled {
                        // Nothing had completed after all: a plain cancellation.
                        WorkflowState::Cancelled
                    } else if !ran.is_empty() && ran.iter().all(|c| *c == "succeeded") {
                        WorkflowState::Compensated
                    } else {
                        WorkflowState::Failed
                    }
                    .as_str()
                    .into();
                    workflow.finished_at = Some(now);
                }
            }
        }
    }
    Ok(enqueued)
}

/// Enqueues one task of a workflow, as its submitter, to be inserted with `writes`;
/// returns its id, or why it could not be (its agent is gone).
async fn enqueue(
    tx: &mut Tx,
    agents: &AgentCache,
    workflow: &WorkflowRow,
    spec: &TaskSpec,
    now: DateTime<Utc>,
    writes: &mut Writes,
) -> Result<Result<String, TaskError>, DbError> {
    let name = spec
        .agent
        .as_deref()
        .expect("a workflow task names its agent");
    let agent = match agent_in(agents, tx, &workflow.tenant_id, name).await {
        Ok(agent) => agent,
        Err(DbError::NotFound) => {
            return Ok(Err(TaskError::new(
                "agent_not_found",
                format!("agent {name:?} was not found"),
                false,
            )));
        }
        Err(e) => return Err(e),
    };
    let submitter = Submitter {
        actor: Actor {
            tenant_id: workflow.tenant_id.clone(),
            key_id: workflow.actor_key_id.clone(),
            ..Actor::default()
        },
        parent: None,
    };
    let mut row = submit::new_row(
        spec,
        &agent,
        &submitter,
        crate::db::new_id(),
        TaskState::Queued,
        now,
        now,
    );
    row.workflow_id = Some(workflow.id.clone());
    let id = row.id.clone();
    writes.tasks.push(row);
    Ok(Ok(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: Value) -> WorkflowSpec {
        serde_json::from_value(json).unwrap()
    }

    fn order_of(spec: &WorkflowSpec) -> Result<Vec<usize>, WorkflowError> {
        let index = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        parents_first(spec, &index)
    }

    #[test]
    fn steps_are_ordered_parents_first_and_a_cycle_is_named() {
        let ok = spec(serde_json::json!({ "steps": [
            { "name": "c", "agent": "x", "action": "y", "depends_on": ["a", "b"] },
            { "name": "a", "agent": "x", "action": "y" },
            { "name": "b", "agent": "x", "action": "y", "depends_on": ["a"] },
        ]}));
        assert_eq!(order_of(&ok).unwrap(), vec![1, 2, 0]);
        let cyclic = spec(serde_json::json!({ "steps": [
            { "name": "a", "agent": "x", "action": "y", "depends_on": ["c"] },
            { "name": "b", "agent": "x", "action": "y", "depends_on": ["a"] },
            { "name": "c", "agent": "x", "action": "y", "depends_on": ["b"] },
        ]}));
        let Err(WorkflowError::Invalid { code, message }) = order_of(&cyclic) else {
            panic!("a cycle is refused")
        };
        assert_eq!(code, ErrorCode::WorkflowCycle);
        assert!(message.contains("a → c → b → a"), "{message}");
    }
}
