//! Group commit for execution records.
//!
//! Every invocation hands its record to one writer task and waits. The writer takes
//! whatever has queued up — one record when idle, hundreds under load — writes them
//! with one multi-row INSERT per chunk in one transaction, commits (with the
//! database's full durability), and only then acknowledges each caller. So a response
//! that says an invocation ran is sent after its row is durable, and the cost of a
//! commit is shared by everything that arrived while the previous one was in flight.
//! If a batch fails, its records are retried one by one, so one bad record cannot
//! fail the others.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::executions::{self, ExecutionRecord};
use super::{Db, DbError, idempotency};

/// An idempotency key to complete with the record.
#[derive(Debug, Clone)]
pub struct KeyCompletion {
    /// The key.
    pub key: String,
    /// The response to store for retries.
    pub response: serde_json::Value,
}

struct Job {
    record: ExecutionRecord,
    key: Option<KeyCompletion>,
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
}

impl ExecutionWriter {
    /// Starts the writer task. It stops after every handle is dropped and the queue
    /// is drained.
    pub fn start(db: Db, max_batch: usize) -> (ExecutionWriter, tokio::task::JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(max_batch * 4);
        let task = tokio::spawn(run(db, queue, max_batch));
        (ExecutionWriter { jobs }, task)
    }

    /// Writes `record` (and completes `key`), returning once it is committed.
    pub async fn write(
        &self,
        record: ExecutionRecord,
        key: Option<KeyCompletion>,
    ) -> Result<(), WriteError> {
        let (done, committed) = oneshot::channel();
        self.jobs
            .send(Job { record, key, done })
            .await
            .map_err(|_| WriteError::Stopped)?;
        committed
            .await
            .map_err(|_| WriteError::Stopped)?
            .map_err(WriteError::Db)
    }
}

async fn run(db: Db, mut queue: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        match commit(&db, &batch).await {
            Ok(()) => {
                for job in batch.drain(..) {
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                let job = batch.pop().expect("one job");
                let _ = job.done.send(Err(Arc::new(e)));
            }
            Err(e) => {
                tracing::warn!(error = %e, size = batch.len(), "batch commit failed; retrying one by one");
                for job in batch.drain(..) {
                    let result = commit(&db, std::slice::from_ref(&job))
                        .await
                        .map_err(Arc::new);
                    let _ = job.done.send(result);
                }
            }
        }
    }
}

async fn commit(db: &Db, jobs: &[Job]) -> Result<(), DbError> {
    let records: Vec<&ExecutionRecord> = jobs.iter().map(|j| &j.record).collect();
    let mut tx = db.begin(None).await?;
    executions::insert_batch(&mut tx, &records).await?;
    for job in jobs {
        if let Some(key) = &job.key {
            idempotency::complete(
                &mut tx,
                &job.record.tenant_id,
                &key.key,
                &job.record.id,
                &key.response,
            )
            .await?;
        }
    }
    tx.commit().await
}
