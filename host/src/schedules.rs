//! Schedules: a cron expression in a time zone, and what each occurrence enqueues — a
//! task (an agent's action with its input) or a run of a stored workflow.
//!
//! Every node runs a ticker ([`run`]) that looks for due schedules each poll interval.
//! An occurrence is handled exactly once across nodes: see [`crate::db::schedules`].
//! Time is the quota clock's, so tests step it instead of waiting.
//!
//! **Missed occurrences.** An occurrence is *late* when it is handled more than
//! [`LATE_AFTER`] after its time (the nodes were down, or all paused). When several
//! have passed, only the latest counts; the earlier ones are never run. Its schedule's
//! `missed` policy then decides: `run_once` runs it (once, however many were missed),
//! `skip` records it as `missed` and waits for the next one. **Overlap**: with
//! `overlap: forbid`, an occurrence whose previous run (task or workflow) is still under
//! way is recorded as `skipped_overlap` instead of starting another.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::types::Json;
use utoipa::ToSchema;

use crate::api::ErrorCode;
use crate::db::agents::Agent;
use crate::db::schedules::{self as db, OccurrenceRow, ScheduleRow};
use crate::db::{DbError, Tx, tasks, workflows as workflow_rows};
use crate::invocations::{Actor, Invocations};
use crate::tasks::TaskState;
use crate::tasks::submit::{self, Submitter, TaskSpec};
use crate::workflows::{self, Start, Started, WorkflowError, WorkflowSpec};

/// How late an occurrence may be handled and still count as on time.
pub const LATE_AFTER: Duration = Duration::from_secs(60);

/// What each occurrence enqueues: a task (`agent` and `action`) or a run of a stored
/// workflow (`workflow`, optionally pinned to a `version`), with `input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The agent of a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The action of a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// A stored workflow's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The stored workflow's version (default: the latest when each occurrence comes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// The input (default `{}`).
    #[serde(default = "empty_object")]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// What to do with a late occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Run the latest late occurrence, once.
    #[default]
    RunOnce,
    /// Record it as missed; wait for the next.
    Skip,
}

/// Whether an occurrence may start while the previous one's work is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Start it anyway.
    #[default]
    Allow,
    /// Record it as `skipped_overlap`.
    Forbid,
}

impl Missed {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::RunOnce => "run_once",
            Missed::Skip => "skip",
        }
    }
}

impl Overlap {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Forbid => "forbid",
        }
    }
}

/// A schedule as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Five fields (minute hour day-of-month month day-of-week) or six (seconds first).
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Paris` (default `UTC`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// What each occurrence enqueues.
    pub target: Target,
    /// What to do with a late occurrence (default `run_once`).
    #[serde(default)]
    pub missed: Missed,
    /// Whether occurrences may overlap (default `allow`).
    #[serde(default)]
    pub overlap: Overlap,
    /// Created paused.
    #[serde(default)]
    pub paused: bool,
}

fn utc() -> String {
    "UTC".into()
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Timing {
    cron: Cron,
    zone: Tz,
}

impl Timing {
    /// Parses a cron expression (five fields, or six with seconds) and a time zone.
    pub fn parse(cron: &str, timezone: &str) -> Result<Timing, String> {
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(cron)
            .map_err(|e| format!("cron {cron:?}: {e}"))?;
        let fields = cron.split_whitespace().count();
        if !(5..=6).contains(&fields) && !cron.trim_start().starts_with('@') {
            return Err(format!(
                "cron {cron:?} has {fields} fields; it has 5, or 6 with seconds first"
            ));
        }
        let zone = Tz::from_str(timezone)
            .map_err(|_| format!("timezone {timezone:?} is not an IANA time zone"))?;
        Ok(Timing { cron: parsed, zone })
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc).trunc_subsecs(0))
    }

    /// The latest occurrence at or before `at`.
    pub fn latest_until(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&self.zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc).trunc_subsecs(0))
    }

    /// The next `n` occurrences after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(n);
        let mut at = after;
        while times.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    times.push(next);
                    at = next;
                }
                None => break,
            }
        }
        times
    }
}

/// Why a schedule was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Something is invalid; the message names the field.
    #[error("{message}")]
    Invalid {
        /// The stable code.
        code: ErrorCode,
        /// What is wrong.
        message: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

fn invalid(message: String) -> ScheduleError {
    ScheduleError::Invalid {
        code: ErrorCode::InvalidSchedule,
        message,
    }
}

/// Checks a schedule: its timing, and its target (a live agent and an action, or a
/// stored workflow that validates).
pub async fn validate(
    pipeline: &Invocations,
    tenant_id: &str,
    spec: &ScheduleSpec,
) -> Result<Timing, ScheduleError> {
    let timing = Timing::parse(&spec.cron, &spec.timezone).map_err(invalid)?;
    let target = &spec.target;
    match (&target.agent, &target.action, &target.workflow) {
        (Some(agent), Some(action), None) if target.version.is_none() => {
            if action.is_empty() {
                return Err(invalid("target.action must not be empty".into()));
            }
            match pipeline.agent(tenant_id, agent).await {
                Ok(_) => {}
                Err(DbError::NotFound) => {
                    return Err(ScheduleError::Invalid {
                        code: ErrorCode::UnknownAgent,
                        message: format!("target.agent {agent:?} was not found in this tenant"),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        (None, None, Some(name)) => {
            stored_workflow(pipeline, tenant_id, name, target.version)
                .await
                .map_err(|e| match e {
                    WorkflowError::NotFound(what) => ScheduleError::Invalid {
                        code: ErrorCode::UnknownWorkflow,
                        message: format!("target.workflow: {what} was not found"),
                    },
                    WorkflowError::Invalid { code, message } => ScheduleError::Invalid {
                        code,
                        message: format!("target.workflow {name:?}: {message}"),
                    },
                    WorkflowError::Db(e) => e.into(),
                    e => invalid(e.to_string()),
                })?;
        }
        _ => {
            return Err(invalid(
                "target names an agent and an action, or a stored workflow (and maybe its version)"
                    .into(),
            ));
        }
    }
    Ok(timing)
}

/// A stored workflow definition, validated: (its steps, its version).
pub async fn stored_workflow(
    pipeline: &Invocations,
    tenant_id: &str,
    name: &str,
    version: Option<i32>,
) -> Result<(WorkflowSpec, i32), WorkflowError> {
    let mut tx = pipeline.db.begin_read(tenant_id).await?;
    let found = workflow_rows::definition(&mut tx, tenant_id, name, version).await;
    tx.commit().await?;
    let row = found.map_err(|e| match e {
        DbError::NotFound => WorkflowError::NotFound(match version {
            Some(v) => format!("workflow definition {name:?} version {v}"),
            None => format!("workflow definition {name:?}"),
        }),
        e => e.into(),
    })?;
    let spec: WorkflowSpec =
        serde_json::from_value(row.definition.0).map_err(|e| WorkflowError::Invalid {
            code: ErrorCode::InvalidWorkflow,
            message: e.to_string(),
        })?;
    workflows::validate(pipeline, tenant_id, &spec).await?;
    Ok((spec, row.version))
}

/// Creates a schedule; its first occurrence is the first after now.
pub async fn create(
    pipeline: &Invocations,
    actor: &Actor,
    spec: &ScheduleSpec,
) -> Result<ScheduleRow, ScheduleError> {
    let timing = validate(pipeline, &actor.tenant_id, spec).await?;
    let now = pipeline.quotas.clock().now();
    let next_at = timing
        .next_after(now)
        .ok_or_else(|| invalid(format!("cron {:?} never occurs", spec.cron)))?;
    let row = ScheduleRow {
        id: crate::db::new_id(),
        tenant_id: actor.tenant_id.clone(),
        cron: spec.cron.clone(),
        timezone: spec.timezone.clone(),
        target: Json(serde_json::to_value(&spec.target).expect("a target serializes")),
        missed: spec.missed.as_str().into(),
        overlap: spec.overlap.as_str().into(),
        paused: spec.paused,
        next_at,
        actor_key_id: actor.key_id.clone(),
        created_at: now,
        updated_at: now,
    };
    let mut tx = pipeline.db.begin(actor.tenant_id.as_str()).await?;
    db::insert(&mut tx, &row).await?;
    let mut event = actor.event("schedule.create", "schedule", Some(&row.id));
    event.after = Some(Json(serde_json::json!({
        "cron": row.cron, "timezone": row.timezone, "target": row.target.0,
        "missed": row.missed, "overlap": row.overlap, "paused": row.paused,
    })));
    crate::db::audit::append(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(row)
}

/// Runs the ticker of this node: every `poll`, handles the due occurrences.
pub async fn run(pipeline: Invocations, poll: Duration) {
    loop {
        tick(&pipeline).await;
        tokio::time::sleep(poll).await;
    }
}

/// Handles every due schedule once; returns how many occurrences this node handled.
pub async fn tick(pipeline: &Invocations) -> usize {
    let now = pipeline.quotas.clock().now();
    let due = match db::due(&pipeline.db, now, 64).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "looking for due schedules failed");
            return 0;
        }
    };
    let mut handled = 0;
    for (id, tenant_id) in due {
        match fire(pipeline, &tenant_id, &id, now).await {
            Ok(true) => handled += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(schedule = %id, error = %e, "handling a schedule failed"),
        }
    }
    if handled > 0 {
        pipeline.task_wake.notify_one();
    }
    handled
}

/// Handles a due schedule's occurrence in one transaction; `false` if another node
/// holds or handled it.
async fn fire(
    pipeline: &Invocations,
    tenant_id: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    // What the occurrence enqueues is resolved first: the transaction below holds
    // SQLite's write lock and must not wait for another connection.
    let schedule = match db::get(&pipeline.db, tenant_id, id).await {
        Ok(schedule) if !schedule.paused && schedule.next_at <= now => schedule,
        Ok(_) | Err(DbError::NotFound) => return Ok(false),
        Err(e) => return Err(e),
    };
    let work = prepare(pipeline, &schedule).await?;
    let mut tx = pipeline.db.begin(tenant_id).await?;
    let Some(schedule) = db::lock_due(&mut tx, tenant_id, id, now).await? else {
        return Ok(false);
    };
    let timing = match Timing::parse(&schedule.cron, &schedule.timezone) {
        Ok(timing) => timing,
        Err(e) => {
            tracing::error!(schedule = %id, error = %e, "a stored schedule does not parse");
            return Ok(false);
        }
    };
    // The latest occurrence that has come; earlier ones are superseded by it.
    let occurrence = timing
        .latest_until(now)
        .filter(|t| *t >= schedule.next_at)
        .unwrap_or(schedule.next_at);
    let late = now - occurrence > chrono::Duration::from_std(LATE_AFTER).unwrap_or_default();
    let mut record = OccurrenceRow {
        schedule_id: schedule.id.clone(),
        occurrence_at: occurrence,
        tenant_id: tenant_id.into(),
        outcome: "enqueued".into(),
        task_id: None,
        workflow_id: None,
        error: None,
        node: pipeline.node.to_string(),
        created_at: now,
    };
    if late && schedule.missed == Missed::Skip.as_str() {
        record.outcome = "missed".into();
    } else if schedule.overlap == Overlap::Forbid.as_str()
        && db::previous_running(&mut tx, &schedule.id).await?
    {
        record.outcome = "skipped_overlap".into();
    }
    if !db::insert_occurrence(&mut tx, &record).await? {
        return Ok(false);
    }
    if record.outcome == "enqueued" {
        match enqueue(&mut tx, pipeline, &schedule, work, now).await? {
            Ok(Work::Task(task)) => record.task_id = Some(task),
            Ok(Work::Workflow(workflow)) => record.workflow_id = Some(workflow),
            Err(why) => {
                record.outcome = "failed".into();
                record.error = Some(why);
            }
        }
        db::set_occurrence_work(&mut tx, &record).await?;
    }
    let next = timing
        .next_after(occurrence.max(now))
        .unwrap_or(occurrence + chrono::Duration::days(36_500));
    if !db::move_next(&mut tx, &schedule.id, schedule.next_at, next, now).await? {
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

enum Work {
    Task(String),
    Workflow(String),
}

/// What an occurrence enqueues, resolved before its transaction.
enum Prepared {
    /// A run of this stored workflow (version) with this input.
    Workflow(WorkflowSpec, i32, String, Value),
    /// A task of this agent.
    Task(Agent, String, Value),
    /// Nothing: why.
    Unavailable(String),
}

/// Resolves a schedule's target (the agent, or the stored workflow, validated).
async fn prepare(pipeline: &Invocations, schedule: &ScheduleRow) -> Result<Prepared, DbError> {
    let target: Target = match serde_json::from_value(schedule.target.0.clone()) {
        Ok(target) => target,
        Err(e) => {
            return Ok(Prepared::Unavailable(format!(
                "the stored target does not parse: {e}"
            )));
        }
    };
    if let Some(name) = target.workflow {
        return match stored_workflow(pipeline, &schedule.tenant_id, &name, target.version).await {
            Ok((spec, version)) => Ok(Prepared::Workflow(spec, version, name, target.input)),
            Err(WorkflowError::Db(e)) => Err(e),
            Err(e) => Ok(Prepared::Unavailable(e.to_string())),
        };
    }
    let (Some(agent_name), Some(action)) = (target.agent, target.action) else {
        return Ok(Prepared::Unavailable("the target names no agent".into()));
    };
    match pipeline.agent(&schedule.tenant_id, &agent_name).await {
        Ok(agent) => Ok(Prepared::Task(agent, action, target.input)),
        Err(DbError::NotFound) => Ok(Prepared::Unavailable(format!(
            "agent {agent_name:?} was not found"
        ))),
        Err(e) => Err(e),
    }
}

/// Enqueues an occurrence's work in `tx`, as the schedule's creator; `Err` says why it
/// could not be (the agent or definition is gone or no longer valid).
async fn enqueue(
    tx: &mut Tx,
    pipeline: &Invocations,
    schedule: &ScheduleRow,
    work: Prepared,
    now: DateTime<Utc>,
) -> Result<Result<Work, String>, DbError> {
    let actor = Actor {
        tenant_id: schedule.tenant_id.clone(),
        key_id: schedule.actor_key_id.clone(),
        ..Actor::default()
    };
    let correlation_id = Some(format!("schedule:{}", schedule.id));
    let (agent, action, input) = match work {
        Prepared::Unavailable(why) => return Ok(Err(why)),
        Prepared::Workflow(spec, version, name, input) => {
            let start = Start {
                spec,
                definition: Some((name, version)),
                input,
                correlation_id,
                schedule_id: Some(schedule.id.clone()),
            };
            return match workflows::start(tx, pipeline, &actor, start, None).await {
                Ok(Started::New(row, _) | Started::Before(row)) => Ok(Ok(Work::Workflow(row.id))),
                Err(WorkflowError::Db(e)) => Err(e),
                Err(e) => Ok(Err(e.to_string())),
            };
        }
        Prepared::Task(agent, action, input) => (agent, action, input),
    };
    let spec = TaskSpec {
        agent: Some(agent.name.clone()),
        key: None,
        action,
        input: RawValue::from_string(input.to_string()).expect("JSON"),
        priority: 0,
        run_at: None,
        limits: Default::default(),
        max_attempts: None,
        backoff: None,
        retry_timeouts: true,
        wait_for_budget: false,
        depends_on: Vec::new(),
        correlation_id,
    };
    let submitter = Submitter {
        actor,
        parent: None,
    };
    let row = submit::new_row(
        &spec,
        &agent,
        &submitter,
        crate::db::new_id(),
        TaskState::Queued,
        now,
        now,
    );
    tasks::insert(tx, &row, &[]).await?;
    tasks::notify(tx).await?;
    Ok(Ok(Work::Task(row.id)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn five_and_six_field_expressions_occur_in_their_time_zone() {
        let at = Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 30).unwrap();
        let every_minute = Timing::parse("* * * * *", "UTC").unwrap();
        assert_eq!(
            every_minute.next_after(at),
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 10, 1, 0).unwrap())
        );
        assert_eq!(
            every_minute.latest_until(at),
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 0).unwrap())
        );
        let every_ten_seconds = Timing::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_ten_seconds.next_after(at),
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 10, 0, 40).unwrap())
        );
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = Timing::parse("0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            paris.next_after(at),
            Some(Utc.with_ymd_and_hms(2030, 1, 2, 8, 0, 0).unwrap())
        );
        assert_eq!(paris.upcoming(at, 3).len(), 3);
    }

    #[test]
    fn malformed_timings_are_refused() {
        for (cron, zone) in [
            ("* * * *", "UTC"),
            ("61 * * * *", "UTC"),
            ("* * * * * * * *", "UTC"),
            ("* * * * *", "Mars/Olympus"),
        ] {
            assert!(Timing::parse(cron, zone).is_err(), "{cron} {zone}");
        }
    }
}
