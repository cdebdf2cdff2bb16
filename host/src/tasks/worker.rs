//! The task workers of one node: claim what may start, run each attempt through the
//! invocation pipeline, and record how it ended.
//!
//! Three loops share one [`Workers`]:
//! - the **dispatcher** claims small batches while it has free workers, and sleeps
//!   until woken — by a submission on this node, by Postgres `NOTIFY corral_tasks` from
//!   any node, by an attempt ending — or until the poll interval passes (the fallback,
//!   and what notices `run_at` and backoffs coming due);
//! - the **supervisor** renews this node's leases, stops attempts whose cancellation
//!   was asked for (within about a second, on whichever node runs them), and takes over
//!   attempts whose node let its lease lapse;
//! - on Postgres, the **listener** turns notifications into wake-ups.
//!
//! No transaction is held while a guest runs: a claim commits before the attempt
//! starts, and the attempt's end is committed with its execution record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::{Next, RetryPolicy, TaskAttempt, TaskCompletion, TaskError};
use crate::db::tasks::{self, Claimed};
use crate::db::{Db, DbError, agents};
use crate::invocations::{Actor, Invocation, Invocations, InvokeError};
use crate::quota;

/// How the workers of a node behave.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// Attempts this node runs at once.
    pub workers: usize,
    /// How long a claim holds without renewal: the most a dead node delays its tasks.
    pub lease: Duration,
    /// The longest the dispatcher sleeps without being woken.
    pub poll: Duration,
}

impl WorkerSettings {
    /// Most tasks claimed in one statement.
    const BATCH: usize = 16;
}

/// Running attempts of this node: cancel switches by task id.
type Running = Arc<Mutex<HashMap<String, (i32, watch::Sender<bool>)>>>;

/// A node's task workers. Dropping it does not stop them: call [`Workers::shutdown`].
pub struct Workers {
    running: Running,
    stop: watch::Sender<bool>,
    dispatcher: tokio::task::JoinHandle<()>,
    supervisor: tokio::task::JoinHandle<()>,
    listener: Option<tokio::task::JoinHandle<()>>,
    node: String,
    db: Db,
}

impl Workers {
    /// Starts the workers of this node; `wake` wakes them (a task was submitted here).
    pub fn start(pipeline: Invocations, settings: WorkerSettings, wake: Arc<Notify>) -> Workers {
        let node = pipeline.node.to_string();
        let (stop, stopped) = watch::channel(false);
        let running: Running = Arc::default();
        let dispatcher = tokio::spawn(dispatch(
            pipeline.clone(),
            settings,
            node.clone(),
            wake.clone(),
            running.clone(),
            stopped.clone(),
        ));
        let supervisor = tokio::spawn(supervise(
            pipeline.clone(),
            settings,
            node.clone(),
            wake.clone(),
            running.clone(),
            stopped.clone(),
        ));
        let listener = match &pipeline.db {
            Db::Postgres(pool) => Some(tokio::spawn(listen(pool.clone(), wake.clone(), stopped))),
            Db::Sqlite(_) => None,
        };
        tracing::info!(node, workers = settings.workers, "task workers started");
        Workers {
            running: running.clone(),
            stop,
            dispatcher,
            supervisor,
            listener,
            node,
            db: pipeline.db.clone(),
        }
    }

    /// Stops claiming and lets running attempts finish within `grace`; then hands back
    /// the attempts still running (recorded `node_lost`, so another node retries them)
    /// and stops their guests. A stopped guest's execution is still recorded and
    /// charged, but, fenced, moves its task nowhere.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut dispatcher = self.dispatcher;
        if tokio::time::timeout(grace, &mut dispatcher).await.is_err() {
            tracing::warn!("task attempts did not finish within the shutdown grace period");
            match tasks::take_over_lapsed(&self.db, crate::db::now(), Some(&self.node)).await {
                Ok(n) => tracing::warn!(handed_back = n, "handed unfinished task attempts back"),
                Err(e) => tracing::error!(error = %e, "could not hand task attempts back"),
            }
            for (_, cancel) in self.running.lock().expect("running lock").values() {
                let _ = cancel.send(true);
            }
            let _ = dispatcher.await;
        }
        self.supervisor.abort();
        if let Some(listener) = self.listener {
            listener.abort();
        }
    }
}

async fn dispatch(
    pipeline: Invocations,
    settings: WorkerSettings,
    node: String,
    wake: Arc<Notify>,
    running: Running,
    mut stopped: watch::Receiver<bool>,
) {
    let mut attempts = JoinSet::new();
    // Whether the last claim found as many tasks as it asked for (more are waiting).
    let mut backlog = false;
    // With a backlog, free workers are claimed for in batches (each claim is a commit,
    // and attempts end one at a time) — but never kept idle longer than this.
    const GATHER: Duration = Duration::from_millis(5);
    let batch = (settings.workers / 2).clamp(1, WorkerSettings::BATCH);
    let mut gathering_since: Option<tokio::time::Instant> = None;
    loop {
        if *stopped.borrow() {
            break;
        }
        let free = settings.workers.saturating_sub(attempts.len());
        let gathered_enough = !backlog
            || attempts.is_empty()
            || free >= batch
            || gathering_since.is_some_and(|since| since.elapsed() >= GATHER);
        let mut claimed_all = false;
        if free > 0 && gathered_enough {
            gathering_since = None;
            let want = free.min(WorkerSettings::BATCH);
            let now = pipeline.quotas.clock().now();
            let lease_until = now + chrono::Duration::from_std(settings.lease).unwrap_or_default();
            match tasks::claim(&pipeline.db, &node, now, lease_until, want as i64).await {
                Ok(claimed) => {
                    backlog = claimed.len() == want;
                    claimed_all = backlog;
                    for claimed in claimed {
                        let (cancel, cancelled) = watch::channel(false);
                        running
                            .lock()
                            .expect("running lock")
                            .insert(claimed.task.id.clone(), (claimed.task.attempts, cancel));
                        let (pipeline, running, wake) =
                            (pipeline.clone(), running.clone(), wake.clone());
                        attempts.spawn(async move {
                            let id = claimed.task.id.clone();
                            let workflow = claimed
                                .task
                                .workflow_id
                                .clone()
                                .map(|w| (claimed.task.tenant_id.clone(), w));
                            let ended_alone = run_attempt(&pipeline, claimed, cancelled).await;
                            running.lock().expect("running lock").remove(&id);
                            wake.notify_one();
                            // A workflow's step whose end was recorded without the
                            // group commit (which moves the workflow on with it): move
                            // the workflow on now. If this fails or the node dies
                            // first, the advancers' sweep does it.
                            if ended_alone && let Some((tenant_id, workflow_id)) = workflow {
                                advance_workflow(&pipeline, &tenant_id, &workflow_id).await;
                            }
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "claiming tasks failed"),
            }
        } else if free > 0 && gathering_since.is_none() {
            gathering_since = Some(tokio::time::Instant::now());
        }
        if claimed_all && settings.workers - attempts.len() >= batch {
            continue;
        }
        let gather = match gathering_since {
            Some(since) => GATHER.saturating_sub(since.elapsed()),
            None => settings.poll,
        };
        tokio::select! {
            () = wake.notified() => {}
            Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            () = tokio::time::sleep(gather.min(settings.poll)) => {}
            _ = stopped.changed() => {}
        }
    }
    // Stopping: no more claims; the attempts under way end on their own.
    while attempts.join_next().await.is_some() {}
}

async fn supervise(
    pipeline: Invocations,
    settings: WorkerSettings,
    node: String,
    wake: Arc<Notify>,
    running: Running,
    mut stopped: watch::Receiver<bool>,
) {
    const TICK: Duration = Duration::from_millis(250);
    let renew_every = (settings.lease / 3).max(TICK);
    let take_over_every = settings.poll.max(TICK);
    let mut last_renewal = tokio::time::Instant::now();
    let mut last_take_over = tokio::time::Instant::now() - take_over_every;
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stopped.changed() => {}
        }
        let busy = !running.lock().expect("running lock").is_empty();
        let now = pipeline.quotas.clock().now();
        if busy {
            match tasks::cancel_requested(&pipeline.db, &node).await {
                Ok(cancelled) => {
                    let running = running.lock().expect("running lock");
                    for (id, attempt) in cancelled {
                        if let Some((running_attempt, cancel)) = running.get(&id)
                            && *running_attempt == attempt
                        {
                            let _ = cancel.send(true);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking for cancelled tasks failed"),
            }
            if last_renewal.elapsed() >= renew_every {
                let until = now + chrono::Duration::from_std(settings.lease).unwrap_or_default();
                match tasks::renew(&pipeline.db, &node, until).await {
                    Ok(_) => last_renewal = tokio::time::Instant::now(),
                    Err(e) => tracing::warn!(error = %e, "renewing task leases failed"),
                }
            }
        } else {
            last_renewal = tokio::time::Instant::now();
        }
        if last_take_over.elapsed() >= take_over_every && !*stopped.borrow() {
            last_take_over = tokio::time::Instant::now();
            match tasks::take_over_lapsed(&pipeline.db, now, None).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(taken_over = n, "took over task attempts whose node stopped");
                    wake.notify_one();
                }
                Err(e) => tracing::warn!(error = %e, "taking over lapsed task attempts failed"),
            }
        }
    }
}

/// Turns `NOTIFY corral_tasks` from any node into a wake-up; reconnects on failure.
async fn listen(pool: sqlx::PgPool, wake: Arc<Notify>, stopped: watch::Receiver<bool>) {
    while !*stopped.borrow() {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for tasks; polling meanwhile");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen("corral_tasks").await {
            tracing::warn!(error = %e, "cannot listen for tasks; polling meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Anything missed while (re)connecting is found by the next claim.
        wake.notify_one();
        loop {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "lost the task notifications; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Moves a workflow on after one of its tasks' attempts ended on this node.
async fn advance_workflow(pipeline: &Invocations, tenant_id: &str, workflow_id: &str) {
    match crate::workflows::advance(pipeline, tenant_id, workflow_id).await {
        Ok(true) => pipeline.task_wake.notify_one(),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(workflow = %workflow_id, error = %e, "advancing a workflow failed; the sweep will");
            pipeline.workflow_wake.notify_one();
        }
    }
}

/// Runs one claimed attempt to its recorded end. Returns whether that end was recorded
/// on its own, not with an execution record by the group commit.
async fn run_attempt(
    pipeline: &Invocations,
    claimed: Claimed,
    cancelled: watch::Receiver<bool>,
) -> bool {
    let task = &claimed.task;
    let attempt = TaskAttempt {
        task_id: task.id.clone(),
        tenant_id: task.tenant_id.clone(),
        attempt: task.attempts as u32,
        policy: RetryPolicy {
            max_attempts: task.max_attempts as u32,
            backoff: task.backoff.0,
            retry_timeouts: task.retry_timeouts,
        },
        workflow_id: task.workflow_id.clone(),
    };
    let result = match prepare(pipeline, &claimed, &attempt, cancelled).await {
        Ok(invocation) => pipeline.run(invocation).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let Err(error) = result else {
        // Its end was committed with its execution record.
        return false;
    };
    let now = pipeline.quotas.clock().now();
    // Put back without an end (not an attempt).
    let mut deferred = false;
    let ended = match error {
        InvokeError::Quota(denial) => {
            let retry_at =
                now + chrono::Duration::from_std(denial.retry_after()).unwrap_or_default();
            match denial {
                quota::Denial::BudgetExhausted { .. } if !task.wait_for_budget => {
                    let error = TaskError::new("budget_exhausted", denial.message(), false);
                    finish(
                        pipeline,
                        &attempt,
                        "budget_exhausted",
                        Next::Failed { error },
                        now,
                    )
                    .await
                }
                // Rate, concurrency, or a budget the task waits for: not an attempt.
                _ => {
                    deferred = true;
                    tasks::defer(&pipeline.db, &task.id, task.attempts, retry_at, now).await
                }
            }
        }
        InvokeError::Paused { .. } => {
            // Held until the agent is resumed (claims skip paused agents).
            let later = now + chrono::Duration::seconds(1);
            deferred = true;
            tasks::defer(&pipeline.db, &task.id, task.attempts, later, now).await
        }
        e @ (InvokeError::NoActiveVersion { .. }
        | InvokeError::VersionNotFound { .. }
        | InvokeError::AgentDeleted { .. }
        | InvokeError::Input(_)) => {
            let code = match e {
                InvokeError::NoActiveVersion { .. } => "no_active_version",
                InvokeError::AgentDeleted { .. } => "agent_deleted",
                InvokeError::Input(crate::runtime::InputRefusal::UnknownAction { .. }) => {
                    "unknown_action"
                }
                InvokeError::Input(_) => "invalid_input",
                _ => "not_found",
            };
            let error = TaskError::new(code, e.to_string(), false);
            finish(pipeline, &attempt, code, Next::Failed { error }, now).await
        }
        InvokeError::Host(_) | InvokeError::Db(_) | InvokeError::ShuttingDown => {
            tracing::warn!(task = %task.id, error = %error, "a task attempt failed in the host");
            let error = TaskError::new("host_failure", "the host failed to run the attempt", true);
            let next = Next::after_retryable(&attempt, error, now);
            finish(pipeline, &attempt, "host_failure", next, now).await
        }
    };
    if let Err(e) = ended {
        // Its lease lapses and another node (or this one) takes it over.
        tracing::error!(task = %task.id, error = %e, "could not record a task attempt's end");
    }
    !deferred
}

/// The invocation of a claimed attempt; an agent that is gone fails the task.
async fn prepare(
    pipeline: &Invocations,
    claimed: &Claimed,
    attempt: &TaskAttempt,
    cancelled: watch::Receiver<bool>,
) -> Result<Invocation, InvokeError> {
    let task = &claimed.task;
    let tenant = pipeline.tenant(&task.tenant_id).await?;
    // The agent by name from the cache, if it is still the same agent; else by id.
    let cached = pipeline
        .agent(&task.tenant_id, &task.agent_name)
        .await
        .ok()
        .filter(|agent| agent.id == task.agent_id);
    let found = match cached {
        Some(agent) => Ok(agent),
        None => agents::by_id(&pipeline.db, &task.tenant_id, &task.agent_id).await,
    };
    let agent = match found {
        Ok(agent) => agent,
        Err(DbError::NotFound) => {
            return Err(InvokeError::AgentDeleted {
                agent: task.agent_name.clone(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let limits = task.limits.0.tighten(pipeline.task_limits(&tenant, &agent));
    let actor = Actor {
        tenant_id: task.tenant_id.clone(),
        key_id: task.actor_key_id.clone(),
        trace: task
            .traceparent
            .as_deref()
            .and_then(crate::telemetry::context::parse),
        ..Actor::default()
    };
    let mut invocation = Invocation::new(
        actor,
        agent,
        tenant,
        task.action.clone(),
        task.input.clone(),
        limits,
        task.run_at,
    );
    invocation.correlation_id = task.correlation_id.clone();
    invocation.execution_id = Some(claimed.execution_id.clone());
    invocation.task = Some(attempt.clone());
    invocation.cancel = Some(cancelled);
    Ok(invocation)
}

async fn finish(
    pipeline: &Invocations,
    attempt: &TaskAttempt,
    outcome: &str,
    next: Next,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DbError> {
    let completion = TaskCompletion {
        task_id: attempt.task_id.clone(),
        attempt: attempt.attempt,
        attempt_outcome: outcome.into(),
        next,
        at: now,
        workflow_id: attempt.workflow_id.clone(),
    };
    tasks::complete_alone(&pipeline.db, &completion).await
}
