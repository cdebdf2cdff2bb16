//! The workflow advancer every node runs: it moves on the workflows whose tasks have
//! ended, woken when an attempt ends on this node, and every poll interval in any case
//! — which is how a workflow whose task ended on a node that died before advancing it
//! is moved on by another.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::workflows;
use crate::invocations::Invocations;

/// Most workflows looked up per sweep.
const BATCH: i64 = 64;

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
        let mut moved = false;
        for (id, tenant_id) in &due {
            match super::advance(pipeline, tenant_id, id).await {
                Ok(enqueued) => {
                    moved = true;
                    if enqueued {
                        pipeline.task_wake.notify_one();
                    }
                }
                Err(e) => tracing::warn!(workflow = %id, error = %e, "advancing a workflow failed"),
            }
        }
        if !moved || (due.len() as i64) < BATCH {
            return;
        }
    }
}
