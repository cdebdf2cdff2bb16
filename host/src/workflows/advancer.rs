//! The workflow advancer every node runs: every poll interval (and when woken, after a
//! cancellation or a failed advance) it moves on the workflows that have a task that
//! ended but is not recorded in its workflow yet. The group commit that records a
//! workflow's task's end advances the workflow in the same transaction
//! (`tasks.workflow_id` names it); the sweep is how a workflow whose task was ended
//! otherwise (a take-over, a cancellation), or whose advance failed or was lost with
//! its node, is moved on by any node.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;

use crate::db::workflows;
use crate::invocations::Invocations;

/// Most workflows looked up per sweep.
const BATCH: i64 = 64;
/// Most workflows advanced at once on Postgres, where different workflows'
/// transactions do not wait on each other; SQLite has one writer, so one at a time.
const CONCURRENCY: usize = 8;

/// Runs until aborted (each advance is one transaction: stopping loses nothing).
pub async fn run(pipeline: Invocations, wake: Arc<Notify>, poll: Duration) {
    loop {
        sweep(&pipeline).await;
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Advances every workflow that has an ended task not yet recorded, until none is left.
pub async fn sweep(pipeline: &Invocations) {
    loop {
        let due = match workflows::needing_advance(&pipeline.db, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "looking for workflows to advance failed");
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        // Several at once on Postgres: each is a few round trips, mostly waiting.
        let concurrency = match pipeline.db {
            crate::db::Db::Postgres(_) => CONCURRENCY,
            crate::db::Db::Sqlite(_) => 1,
        };
        let results: Vec<bool> = futures::stream::iter(due.clone())
            .map(|(id, tenant_id)| {
                let pipeline = pipeline.clone();
                async move {
                    match super::advance(&pipeline, &tenant_id, &id).await {
                        Ok(enqueued) => {
                            if enqueued {
                                pipeline.task_wake.notify_one();
                            }
                            true
                        }
                        Err(e) => {
                            tracing::warn!(workflow = %id, error = %e, "advancing a workflow failed");
                            false
                        }
                    }
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let moved = results.contains(&true);
        if !moved || (due.len() as i64) < BATCH {
            return;
        }
    }
}
