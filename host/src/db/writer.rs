//! Group commit for execution records.
//!
//! Every invocation hands its record to the writer and waits. A committer takes
//! whatever has queued up — one record when idle, hundreds under load — writes them
//! in one transaction, commits (with the database's full durability), and only then
//! acknowledges each caller. So a response that says an invocation ran is sent after
//! its row is durable, and the cost of a commit is shared by everything that arrived
//! while the previous one was in flight. On Postgres several committers take turns,
//! so one batch is written while another waits for its commit to reach disk; SQLite
//! has a single writer lock, so it gets one. If a batch fails, its records are retried
//! one by one, so one bad record cannot fail the others; a record that still fails
//! alone is written once more *degraded* — outcome, usage and cost only — so a run that
//! happened is never left unrecorded and unbilled. The same transaction charges the
//! records to their agents' and tenants' usage counters, which budgets read.
//!
//! A record that ends a workflow's step also moves that workflow on in the same
//! transaction (see [`WorkflowSteps`]): the step's end and what comes next share one
//! commit, as a plain task's end and the release of its dependants do.
//!
//! Before anything is queued, the guest's text is made storable (see [`text`](super::text)):
//! what one database cannot hold is replaced on both, and the record says how much.

use std::sync::Arc;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{Notify, mpsc, oneshot};

use super::audit::{self, AuditEvent};
use super::executions::{self, ExecutionRecord};
use super::{Db, DbError, Tx, idempotency, tasks, usage, workflows};
use crate::invocations::AgentCache;
use crate::tasks::TaskCompletion;

/// An idempotency key to complete with the record.
#[derive(Debug, Clone)]
pub struct KeyCompletion {
    /// The key.
    pub key: String,
    /// The response to store for retries.
    pub response: serde_json::Value,
}

/// What the writer needs to move a workflow on in the transaction that records the
/// end of one of its tasks.
#[derive(Clone)]
pub struct WorkflowSteps {
    /// Live agents, shared with the invocation pipeline (the next steps' agents).
    pub agents: Arc<AgentCache>,
    /// Wakes the advancers, whose sweep moves on a workflow this transaction could not.
    pub behind: Arc<Notify>,
}

struct Job {
    /// `None` for a job that only appends audit events.
    record: Option<ExecutionRecord>,
    key: Option<KeyCompletion>,
    /// The task attempt the record ends, completed in the same transaction.
    task: Option<TaskCompletion>,
    /// Set when that task is a workflow's: how to move the workflow on.
    workflow: Option<WorkflowSteps>,
    events: Vec<AuditEvent>,
    done: oneshot::Sender<Result<(), Arc<DbError>>>,
}

/// Why a record was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The writer has stopped (the host is shutting down).
    #[error("the execution writer has stopped")]
    Stopped,
    /// The database refused the record.
    #[error("{0}")]
    Db(Arc<DbError>),
}

/// The handle callers use; cheap to clone.
#[derive(Clone)]
pub struct ExecutionWriter {
    jobs: mpsc::Sender<Job>,
    metrics: CommitMetrics,
    workflows: Option<WorkflowSteps>,
}

/// What the committers measure, for `GET /metrics`.
#[derive(Debug, Clone)]
pub struct CommitMetrics {
    /// Jobs (records and lone audit appends) per group commit.
    pub batch_size: Histogram,
    /// How long each group commit's transaction took, from begin to commit.
    pub seconds: Histogram,
}

impl CommitMetrics {
    fn new() -> CommitMetrics {
        CommitMetrics {
            // 1 to 2048, doubling.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            seconds: Histogram::new(crate::metrics::seconds_buckets()),
        }
    }
}

impl ExecutionWriter {
    /// Starts the committers. They stop after every handle is dropped and the queue
    /// is drained; the returned task ends when they have.
    pub fn start(db: Db, max_batch: usize) -> (ExecutionWriter, tokio::task::JoinHandle<()>) {
        let committers = match db {
            Db::Postgres(_) => 4,
            Db::Sqlite(_) => 1,
        };
        let (jobs, queue) = mpsc::channel(max_batch * 4);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let metrics = CommitMetrics::new();
        let tasks: Vec<_> = (0..committers)
            .map(|shard| {
                tokio::spawn(run(
                    db.clone(),
                    queue.clone(),
                    max_batch,
                    shard,
                    metrics.clone(),
                ))
            })
            .collect();
        let all = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        let writer = ExecutionWriter {
            jobs,
            metrics,
            workflows: None,
        };
        (writer, all)
    }

    /// What the committers measure.
    pub fn metrics(&self) -> &CommitMetrics {
        &self.metrics
    }

    /// This writer, moving on the workflow of every task attempt it records the end
    /// of. (Without, a workflow is moved on by the advancers' sweep.)
    pub fn moving_workflows(self, steps: WorkflowSteps) -> ExecutionWriter {
        ExecutionWriter {
            workflows: Some(steps),
            ..self
        }
    }

    /// Writes `record` (completing `key` and the task attempt `task`, appending
    /// `events` to the audit trail), returning once it is committed.
    pub async fn write(
        &self,
        record: ExecutionRecord,
        key: Option<KeyCompletion>,
        task: Option<TaskCompletion>,
        events: Vec<AuditEvent>,
    ) -> Result<(), WriteError> {
        self.submit(Some(record), key, task, events).await
    }

    /// Appends audit events (a denial, say) in the next group commit, returning once
    /// they are committed: a flood of refused requests shares commits instead of
    /// paying one each.
    pub async fn audit(&self, events: Vec<AuditEvent>) -> Result<(), WriteError> {
        self.submit(None, None, None, events).await
    }

    async fn submit(
        &self,
        mut record: Option<ExecutionRecord>,
        mut key: Option<KeyCompletion>,
        task: Option<TaskCompletion>,
        mut events: Vec<AuditEvent>,
    ) -> Result<(), WriteError> {
        if let Some(record) = &mut record {
            record.make_storable();
        }
        if let Some(key) = &mut key {
            super::text::replace_nul_json(&mut key.response);
        }
        for event in &mut events {
            event.make_storable();
        }
        let workflow = task
            .as_ref()
            .and_then(|t| t.workflow_id.as_ref())
            .and_then(|_| self.workflows.clone());
        let (done, committed) = oneshot::channel();
        self.jobs
            .send(Job {
                record,
                key,
                task,
                workflow,
                events,
                done,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        committed
            .await
            .map_err(|_| WriteError::Stopped)?
            .map_err(WriteError::Db)
    }
}

async fn run(
    db: Db,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    shard: i32,
    metrics: CommitMetrics,
) {
    let mut batch = Vec::with_capacity(max_batch);
    // Take a batch while holding the queue, commit it after letting go, so the next
    // committer can gather the following batch meanwhile.
    while queue.lock().await.recv_many(&mut batch, max_batch).await > 0 {
        tracing::debug!(
            size = batch.len(),
            "committing a batch of execution records"
        );
        metrics.batch_size.observe(batch.len() as f64);
        let started = std::time::Instant::now();
        let committed = commit(&db, &batch, shard).await;
        metrics.seconds.observe(started.elapsed().as_secs_f64());
        match committed {
            Ok(()) => {
                for job in batch.drain(..) {
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                let job = batch.pop().expect("one job");
                let result = recover(&db, &job, e, shard).await;
                let _ = job.done.send(result);
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "batch commit failed; retrying one by one");
                for job in batch.drain(..) {
                    let result = match commit(&db, std::slice::from_ref(&job), shard).await {
                        Ok(()) => Ok(()),
                        Err(e) => recover(&db, &job, e, shard).await,
                    };
                    let _ = job.done.send(result);
                }
            }
        }
    }
}

impl Job {
    /// This job with its record degraded to outcome, usage and cost (and its key's
    /// stored response and its events cut to what identifies them); `None` for a job
    /// that only appends audit events, which has nothing to fall back to.
    fn degraded(&self) -> Option<Job> {
        let mut record = self.record.clone()?;
        record.degrade();
        let key = self.key.as_ref().map(|key| KeyCompletion {
            key: key.key.clone(),
            response: serde_json::json!({
                "execution_id": record.id,
                "agent": record.agent_name,
                "outcome": record.outcome,
                "record_degraded": true,
            }),
        });
        let events = self
            .events
            .iter()
            .cloned()
            .map(|mut event| {
                event.before = None;
                event.after = None;
                event
            })
            .collect();
        let (done, _) = oneshot::channel();
        // The workflow is left to the advancers' sweep: the least a degraded write
        // can do is the safest.
        if let Some(steps) = &self.workflow {
            steps.behind.notify_one();
        }
        Some(Job {
            record: Some(record),
            key,
            task: self.task.clone(),
            workflow: None,
            events,
            done,
        })
    }
}

/// After `error` refused a job alone: a job that moves a workflow on is written
/// without (the advancers' sweep moves the workflow on from its task's end); failing
/// that, or for any other job, its degraded form is (if it has one).
async fn recover(db: &Db, job: &Job, error: DbError, shard: i32) -> Result<(), Arc<DbError>> {
    if let Some(steps) = &job.workflow {
        tracing::warn!(%error, "moving a workflow on with its task's end failed; the sweep will");
        let (done, _) = oneshot::channel();
        let alone = Job {
            record: job.record.clone(),
            key: job.key.clone(),
            task: job.task.clone(),
            workflow: None,
            events: job.events.clone(),
            done,
        };
        if commit(db, std::slice::from_ref(&alone), shard)
            .await
            .is_ok()
        {
            steps.behind.notify_one();
            return Ok(());
        }
    }
    let Some(degraded) = job.degraded() else {
        return Err(Arc::new(error));
    };
    tracing::error!(
        %error,
        execution_id = degraded.record.as_ref().map(|r| r.id.as_str()),
        "an execution record could not be written; keeping its outcome, usage and cost"
    );
    let written = commit(db, std::slice::from_ref(&degraded), shard).await;
    written.map_err(|_| Arc::new(error))
}

async fn commit(db: &Db, jobs: &[Job], shard: i32) -> Result<(), DbError> {
    let records: Vec<&ExecutionRecord> = jobs.iter().filter_map(|j| j.record.as_ref()).collect();
    let mut tx = db.begin(super::Wide::GroupCommit).await?;
    let workflows = lock_workflows(&mut tx, jobs).await?;
    if !records.is_empty() {
        executions::insert_batch(&mut tx, &records).await?;
        super::llm_calls::insert_batch(&mut tx, &records).await?;
        usage::charge(&mut tx, &records, shard).await?;
    }
    for event in jobs.iter().flat_map(|j| &j.events) {
        audit::append(&mut tx, event).await?;
    }
    for job in jobs {
        if let Some(task) = &job.task {
            // Fenced: a stale attempt's record is still kept (it ran, it is billed),
            // but it moves its task nowhere.
            tasks::complete(&mut tx, task).await?;
        }
        if let (Some(key), Some(record)) = (&job.key, &job.record) {
            idempotency::complete(
                &mut tx,
                &record.tenant_id,
                &key.key,
                &record.id,
                &key.response,
            )
            .await?;
        }
    }
    if let Some(workflows) = workflows {
        advance_workflows(&mut tx, workflows).await?;
    }
    tx.commit().await
}

/// The workflows of the tasks whose ends a batch records.
struct Ended {
    steps: WorkflowSteps,
    /// Their ids, sorted.
    ids: Vec<String>,
    /// On Postgres, their rows, locked before the ends were written.
    locked: Option<Vec<workflows::WorkflowRow>>,
    /// When the latest of those ends happened.
    now: chrono::DateTime<chrono::Utc>,
}

/// Finds the workflows of the tasks whose ends `jobs` record and, on Postgres, locks
/// them before any task row is written: every transaction that moves a workflow on (a
/// cancellation, an advance) takes the workflow's row before its tasks', and these are
/// taken in one ordered statement, so no two transactions wait on each other in a
/// cycle. (SQLite's write transaction holds the file's only write lock already: the
/// rows are read with their steps, in one statement, when they are moved on.)
async fn lock_workflows(tx: &mut Tx, jobs: &[Job]) -> Result<Option<Ended>, DbError> {
    let ended: Vec<(&TaskCompletion, &WorkflowSteps)> = jobs
        .iter()
        .filter_map(|j| j.task.as_ref().zip(j.workflow.as_ref()))
        .collect();
    let Some(&(_, steps)) = ended.first() else {
        return Ok(None);
    };
    let mut ids: Vec<String> = ended
        .iter()
        .filter_map(|(task, _)| task.workflow_id.clone())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let now = ended.iter().map(|(task, _)| task.at).max().expect("one");
    let locked = match tx {
        Tx::Postgres(_) => Some(workflows::lock_all(tx, &ids).await?),
        Tx::Sqlite(_) => None,
    };
    Ok(Some(Ended {
        steps: steps.clone(),
        ids,
        locked,
        now,
    }))
}

/// Moves the workflows on, after their tasks' ends are written, as the last thing
/// before the commit. No savepoint: if this fails, the batch fails, and is retried job
/// by job; a job whose workflow still cannot be moved on is written without (see
/// [`recover`]), and the advancers' sweep moves its workflow on.
async fn advance_workflows(tx: &mut Tx, ended: Ended) -> Result<(), DbError> {
    let moving = match ended.locked {
        Some(rows) => workflows::steps_for(tx, rows).await?,
        None => workflows::with_steps(tx, &ended.ids).await?,
    };
    match crate::workflows::advance_all(tx, &ended.steps.agents, moving, ended.now).await {
        Ok(_) => Ok(()),
        Err(crate::workflows::WorkflowError::Db(e)) => Err(e),
        Err(e) => Err(DbError::Internal(sqlx::Error::Protocol(format!(
            "moving workflows on: {e}"
        )))),
    }
}
